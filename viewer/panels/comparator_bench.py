"""The benchmark dialog: ``models.bench.run_bench`` (the code behind ``main.py bench``) on a
thread of its own, with a progress bar and Cancel, then the table and the speed-vs-quality plot.

The benchmark loads its own instances of the backends (the viewer's stay on the render thread)
and the dataset's test split (through the comparator's ground-truth store, so the viewer and
the benchmark share one copy). It writes bench.md/.csv/.json/.png into the chosen folder.
Timings are only trustworthy while the view is still: the viewer renders on the same device.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, QThread, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QGuiApplication, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from models.backends import registry
from viewer.compare import GroundTruthStore

COLUMNS = [
    ("label", "backend", "{}"),
    ("psnr", "PSNR", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("ms_median", "ms/frame", "{:.1f}"),
    ("ms_p95", "ms p95", "{:.1f}"),
    ("fps", "FPS", "{:.1f}"),
    ("samples_per_ray", "samples/ray", "{:.1f}"),
    ("flops_per_ray", "MFLOPs/ray", "{:.3f}"),
    ("params", "params", "{:,}"),
    ("peak_memory_mib", "peak MiB", "{:.0f}"),
    ("speedup_vs_nerf", "vs NeRF", "{:.1f}x"),
]
"""Table columns: report key, header, format (MFLOPs are FLOPs / 1e6)."""


class PlotLabel(QLabel):
    """Shows a picture scaled to fit (aspect kept), whatever size the layout gives it."""

    def __init__(self):
        super().__init__()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(240, 160)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)  # the picture follows
        self.picture: QPixmap | None = None

    def set_picture(self, pixmap: QPixmap | None) -> None:
        self.picture = pixmap
        self._rescale()

    def _rescale(self) -> None:
        if self.picture is not None:
            self.setPixmap(self.picture.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._rescale()


class BenchRunner(QObject):
    """Runs one benchmark on the thread it lives on."""

    progress = pyqtSignal(str)
    fraction = pyqtSignal(float)
    finished = pyqtSignal(object, str)
    """report, output folder"""
    failed = pyqtSignal(str)
    _start = pyqtSignal(object)

    def __init__(self):
        super().__init__()
        self.cancelled = False
        self._start.connect(self._run)

    def start(self, options: dict) -> None:
        self.cancelled = False
        self._start.emit(options)

    @pyqtSlot(object)
    def _run(self, o: dict) -> None:
        from models import devices
        from models.bench import BenchCancelled, run_bench

        try:
            self.progress.emit("loading the dataset's test views…")
            store: GroundTruthStore = o["store"]
            data = store.data(("test",))
            if "test" not in data.splits:
                data = store.data(("val",))
            device = devices.resolve_device(o["device"])
            report = run_bench(o["scene"], data, o["backends"], device, o["size"], Path(o["out"]), o["views"],
                               o["timing_views"], o["repeats"], on_progress=self.progress.emit,
                               on_fraction=self.fraction.emit, should_cancel=lambda: self.cancelled)
        except BenchCancelled:
            self.failed.emit("cancelled")
            return
        except Exception as e:  # noqa: BLE001 - shown in the dialog
            traceback.print_exception(e)
            self.failed.emit(f"{type(e).__name__}: {e}".splitlines()[0])
            return
        self.finished.emit(report, str(o["out"]))


class BenchDialog(QDialog):
    """Options, Run/Cancel, progress; then the results table and plot."""

    benchFinished = pyqtSignal(object, str)
    """report, output folder"""
    benchFailed = pyqtSignal(str)

    def __init__(self, window, scene, store: GroundTruthStore | None, available: list[str], device: str | None):
        super().__init__(window)
        self.setWindowTitle(f"Benchmark — {scene.root.name}")
        self.setObjectName("bench-dialog")
        self.scene = scene
        self.store = store if store is not None else GroundTruthStore(scene)
        self.device = device
        self.report: dict | None = None
        self.out_dir: str | None = None
        self.running = False

        lay = QVBoxLayout(self)
        form = QFormLayout()
        row = QHBoxLayout()
        self.backend_boxes: dict[str, QCheckBox] = {}
        for name in registry.BACKENDS:
            box = QCheckBox(registry.BACKENDS[name].label or name)
            box.setEnabled(name in available)
            box.setChecked(name in available)
            row.addWidget(box)
            self.backend_boxes[name] = box
        form.addRow("Backends", row)
        self.size = QSpinBox()
        self.size.setRange(0, 4096)
        self.size.setSpecialValueText("native")
        self.size.setValue(0)
        self.size.setSuffix(" px")
        self.size.setToolTip("Timing resolution (longest side); quality is always at the native size")
        form.addRow("Timing size", self.size)
        self.views = QSpinBox()
        self.views.setRange(0, 100000)
        self.views.setSpecialValueText("all")
        self.views.setToolTip("Test views for PSNR/SSIM (0: all)")
        form.addRow("Quality views", self.views)
        self.timing_views = QSpinBox()
        self.timing_views.setRange(1, 1000)
        self.timing_views.setValue(5)
        form.addRow("Timing views", self.timing_views)
        self.repeats = QSpinBox()
        self.repeats.setRange(1, 100)
        self.repeats.setValue(3)
        form.addRow("Repeats", self.repeats)
        folder = Path(window.settings.value("output_dir", str(Path.cwd() / "captures")))
        self.out = QLineEdit(str(folder / f"bench-{scene.root.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out)
        out_row.addWidget(browse)
        form.addRow("Output folder", out_row)
        lay.addLayout(form)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("bench-run")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.copy_button = QPushButton("Copy Markdown")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self._copy_markdown)
        for b in (self.run_button, self.cancel_button, self.copy_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.message = QLabel("Timings are reliable only while the view is still (the viewer renders on the "
                              "same device).")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: gray;")
        lay.addWidget(self.message)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("bench-table")
        self.table.setHorizontalHeaderLabels([c[1] for c in COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._fit_table()
        lay.addWidget(self.table)
        self.plot = PlotLabel()
        self.plot.setObjectName("bench-plot")
        lay.addWidget(self.plot, 1)
        self.resize(860, 760)

        self.thread = QThread(self)
        self.thread.setObjectName("bench")
        self.runner = BenchRunner()
        self.runner.moveToThread(self.thread)
        self.runner.progress.connect(self._on_progress)
        self.runner.fraction.connect(lambda f: self.progress.setValue(int(1000 * f)))
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.thread.start()

    # -------------------------------------------------------------------------------- run
    def selected_backends(self) -> list[str]:
        return [n for n, b in self.backend_boxes.items() if b.isEnabled() and b.isChecked()]

    def start(self) -> bool:
        names = self.selected_backends()
        if self.running:
            return False
        if not names:
            self.message.setText("Select at least one trained backend.")
            return False
        self.running = True
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.runner.start({"scene": self.scene, "store": self.store, "backends": names, "device": self.device,
                           "size": self.size.value() or None, "views": self.views.value() or None,
                           "timing_views": self.timing_views.value(), "repeats": self.repeats.value(),
                           "out": self.out.text().strip()})
        return True

    def cancel(self) -> None:
        self.runner.cancelled = True
        self.message.setText("cancelling after the current render…")

    def _done(self) -> None:
        self.running = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_progress(self, text: str) -> None:
        self.message.setText(text)

    def _on_finished(self, report: dict, out: str) -> None:
        self._done()
        self.report, self.out_dir = report, out
        self.progress.setValue(1000)
        self.show_report(report, Path(out))
        self.message.setText(f"{report['device']}: wrote bench.md, bench.csv, bench.json and bench.png to {out}")
        self.copy_button.setEnabled(True)
        self.benchFinished.emit(report, out)

    def _on_failed(self, message: str) -> None:
        self._done()
        self.message.setText("Benchmark cancelled." if message == "cancelled" else f"Benchmark failed: {message}")
        self.benchFailed.emit(message)

    def show_report(self, report: dict, out: Path) -> None:
        rows = report["rows"]
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _, fmt) in enumerate(COLUMNS):
                v = row.get(key)
                if key == "flops_per_ray" and v is not None:
                    v = v / 1e6
                try:
                    text = "–" if v is None or v != v else fmt.format(v)
                except (TypeError, ValueError):
                    text = str(v)
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self._fit_table()
        pix = QPixmap(str(out / "bench.png"))
        self.plot.set_picture(None if pix.isNull() else pix)

    def _fit_table(self) -> None:
        """Exactly as tall as its rows, so the plot gets the rest of the dialog."""
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + rows + 2 * self.table.frameWidth() + 2)


    def _copy_markdown(self) -> None:
        from models.bench import markdown_table

        if self.report is not None:
            QGuiApplication.clipboard().setText(markdown_table(self.report))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Benchmark output folder", self.out.text())
        if path:
            self.out.setText(path)

    def shutdown(self) -> None:
        self.runner.cancelled = True
        if self.thread.isRunning():
            self.thread.quit()
            self.thread.wait()

    def closeEvent(self, event) -> None:
        if self.running:
            self.cancel()
        super().closeEvent(event)

