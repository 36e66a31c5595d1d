"""The comparator: two backends on one camera, with their speed and quality.

``Comparator`` is attached to the main window (``MainWindow.comparator``). Compare mode (key C)
makes every view job name two backends, A (the window's backend, keys 1/2/3, left) and B (right):
the worker renders both from the same request, one dynamic resolution for the pair. The canvas
shows them with a draggable divider or as two panes side by side (V), or a difference heatmap
(X: |A-B|, then each side's error against the reference); G shows the reference in place of B.

Quality (``viewer.compare``): at a dataset view, PSNR/SSIM of each side against the ground-truth
image, measured as ``eval`` measures it by a metrics job per side on a thread of its own
(``MetricsRunner``, with its own backend instances) as soon as the view is snapped, whatever the
window's size or refinement; results are kept per (backend, dataset view) until the scene or the
backend's weights change, and a job no longer needed is aborted. The dataset is loaded lazily on
a thread of its own; without it, or away from dataset views, a task on the render thread
measures both sides against the NeRF teacher's render once the view is final. Per-side overlays
at the bottom of the view show FPS, ms/frame, samples/ray, FLOPs/ray, parameters and the
quality ("computing…" until it arrives). The side panel (a "Compare" dock tab) holds
the same controls and the benchmark button (``viewer.panels.comparator_bench``).
"""

from __future__ import annotations

import traceback

from PyQt6.QtCore import QEvent, QObject, Qt, QThread, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QAction, QFontDatabase, QKeySequence
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from models.backends import registry
from models.backends.base import RenderAborted
from viewer.compare import (
    TEACHER,
    GroundTruthStore,
    MetricsBackends,
    MetricsJob,
    QualityResult,
    ViewMetrics,
    at_dataset_view,
    dataset_quality,
    dataset_view,
    format_quality,
    reference_label,
    teacher_quality_task,
)
from viewer.render_worker import Frame, WorkerTask, describe_error

COMPUTING = "computing…"
"""What a side shows while its metrics job runs."""

SHOW_MODES = {
    "ab": ("A | B", ("a", "b")),
    "ref": ("A | reference (ground truth / teacher)", ("a", "ref")),
    "diff_ab": ("Heatmap |A − B|", ("diff_ab",)),
    "diff_ref": ("Heatmaps |A − ref|, |B − ref|", ("diff_a_ref", "diff_b_ref")),
}
"""Display choices of compare mode: label and the canvas sources (left, right)."""


def _label(name: str | None) -> str:
    if not name:
        return "-"
    cls = registry.BACKENDS.get(name)
    return (cls.label or name) if cls else name


class SideOverlay(QLabel):
    """Statistics of one side, over the bottom corner of its half of the view."""

    def __init__(self, parent: QWidget, side: str):
        super().__init__(parent)
        self.side = side
        self.setObjectName(f"compare-{side}")
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(max(font.pointSize(), 9))
        self.setFont(font)
        colour = "#ffd24d" if side == "a" else "#7fd4ff"
        self.setStyleSheet(f"QLabel#compare-{side} {{ background: rgba(0,0,0,160); color: #e8e8e8; padding: 5px 8px;"
                           f" border-radius: 4px; border-{'left' if side == 'a' else 'right'}: 3px solid {colour}; }}")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.hide()

    def set_lines(self, lines: list[str]) -> None:
        self.setText("\n".join(lines))
        self.adjustSize()
        self.place()

    def place(self) -> None:
        p = self.parentWidget()
        y = max(0, p.height() - self.height() - 10)
        self.move(10 if self.side == "a" else max(0, p.width() - self.width() - 10), y)


class GroundTruthLoader(QObject):
    """Loads dataset splits on its own thread (decoding a dataset takes seconds)."""

    loaded = pyqtSignal(object, str)
    """store, split"""
    failed = pyqtSignal(object, str, str)
    """store, split, message"""
    _request = pyqtSignal(object, str)

    def __init__(self):
        super().__init__()
        self._request.connect(self._load)

    def request(self, store: GroundTruthStore, split: str) -> None:
        self._request.emit(store, split)

    @pyqtSlot(object, str)
    def _load(self, store: GroundTruthStore, split: str) -> None:
        try:
            store.data((split,))
        except Exception as e:  # noqa: BLE001 - a missing dataset is a message, not a crash
            self.failed.emit(store, split, str(e))
            return
        self.loaded.emit(store, split)


class MetricsRunner(QObject):
    """Runs metrics jobs in order on the thread it lives on, with backend instances of its own
    (``MetricsBackends``), so neither the GUI nor the render thread ever waits for them."""

    finished = pyqtSignal(object, object)
    """MetricsJob, ViewMetrics"""
    failed = pyqtSignal(object, str)
    """MetricsJob, message ("aborted" when cancelled)"""
    _job = pyqtSignal(object)
    _publish = pyqtSignal(str, object, object)
    _forget = pyqtSignal(object)

    def __init__(self, device):
        super().__init__()
        self.backends = MetricsBackends(device)
        self._job.connect(self._run)
        self._publish.connect(self._publish_weights)
        self._forget.connect(self._forget_backends)

    def submit(self, job: MetricsJob) -> None:
        self._job.emit(job)

    def publish(self, name: str, state: dict, config: dict | None) -> None:
        """Weights published for ``name``: jobs submitted after this call use them."""
        self._publish.emit(name, state, config)

    def forget(self, name: str | None = None) -> None:
        """Reload backend ``name`` (None: all) from the scene of the next job that needs it."""
        self._forget.emit(name)

    @pyqtSlot(str, object, object)
    def _publish_weights(self, name: str, state: dict, config) -> None:
        try:
            self.backends.publish(name, state, config)
        except Exception as e:  # noqa: BLE001 - the render thread reports bad weights; start afresh
            traceback.print_exception(e)
            self.backends.forget(name)

    @pyqtSlot(object)
    def _forget_backends(self, name: str | None) -> None:
        self.backends.forget(name)

    @pyqtSlot(object)
    def _run(self, job: MetricsJob) -> None:
        try:
            result = self.backends.run(job)
        except RenderAborted:
            self.failed.emit(job, "aborted")
            return
        except Exception as e:  # noqa: BLE001 - a failing metric is a message, not a crash
            traceback.print_exception(e)
            self.failed.emit(job, describe_error(e))
            return
        self.finished.emit(job, result)


class ComparatorPanel(QGroupBox):
    """Side-panel controls of compare mode."""

    activeToggled = pyqtSignal(bool)
    backendAChosen = pyqtSignal(str)
    backendBChosen = pyqtSignal(str)
    layoutChosen = pyqtSignal(bool)
    """side by side?"""
    showChosen = pyqtSignal(str)
    heatMaxChanged = pyqtSignal(float)
    benchmarkRequested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Compare", parent)
        lay = QVBoxLayout(self)
        self.active = QCheckBox("Compare two backends (C)")
        self.active.setObjectName("compare-active")
        self.active.toggled.connect(self.activeToggled.emit)
        lay.addWidget(self.active)
        form = QFormLayout()
        self.combo_a, self.combo_b = QComboBox(), QComboBox()
        self.combo_a.setObjectName("compare-a-combo")
        self.combo_b.setObjectName("compare-b-combo")
        self.combo_a.activated.connect(lambda i: self.backendAChosen.emit(self.combo_a.itemData(i)))
        self.combo_b.activated.connect(lambda i: self.backendBChosen.emit(self.combo_b.itemData(i)))
        form.addRow("A (left)", self.combo_a)
        form.addRow("B (right)", self.combo_b)
        row = QHBoxLayout()
        self._layout_group = QButtonGroup(self)
        self.divider = QRadioButton("Divider")
        self.side_by_side = QRadioButton("Side by side")
        for b in (self.divider, self.side_by_side):
            self._layout_group.addButton(b)
            row.addWidget(b)
        self.divider.setChecked(True)
        self.side_by_side.toggled.connect(self.layoutChosen.emit)
        form.addRow("Layout (V)", row)
        self.show_combo = QComboBox()
        for key, (label, _) in SHOW_MODES.items():
            self.show_combo.addItem(label, key)
        self.show_combo.activated.connect(lambda i: self.showChosen.emit(self.show_combo.itemData(i)))
        self.show_combo.setToolTip("G: A | reference;  X: heatmaps")
        form.addRow("Show", self.show_combo)
        self.heat_max = QDoubleSpinBox()
        self.heat_max.setRange(0.01, 1.0)
        self.heat_max.setSingleStep(0.05)
        self.heat_max.setDecimals(2)
        self.heat_max.setValue(0.2)
        self.heat_max.setToolTip("Mean absolute RGB error at the top (red) of the heatmap's colour map")
        self.heat_max.valueChanged.connect(self.heatMaxChanged.emit)
        form.addRow("Heatmap max", self.heat_max)
        lay.addLayout(form)
        self.quality = QLabel("Quality: -")
        self.quality.setObjectName("compare-quality")
        self.quality.setWordWrap(True)
        self.quality.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.quality)
        self.bench = QPushButton("Benchmark all backends…")
        self.bench.setToolTip("Quality on the test views and timings of every backend (Ctrl+B)")
        self.bench.clicked.connect(self.benchmarkRequested.emit)
        lay.addWidget(self.bench)

    def set_backends(self, names: list[str], a: str | None, b: str | None) -> None:
        for combo, cur in ((self.combo_a, a), (self.combo_b, b)):
            combo.blockSignals(True)
            combo.clear()
            for n in names:
                combo.addItem(_label(n), n)
            if cur in names:
                combo.setCurrentIndex(names.index(cur))
            combo.blockSignals(False)

    def set_state(self, active: bool, side_by_side: bool, show: str) -> None:
        """Show the comparator's state without emitting the change signals."""
        for w in (self.active, self.divider, self.side_by_side, self.show_combo):
            w.blockSignals(True)
        self.active.setChecked(active)
        (self.side_by_side if side_by_side else self.divider).setChecked(True)
        self.show_combo.setCurrentIndex(list(SHOW_MODES).index(show))
        for w in (self.active, self.divider, self.side_by_side, self.show_combo):
            w.blockSignals(False)


class Comparator(QObject):
    """Compare mode of a MainWindow: state, actions, overlays, quality tasks and benchmark."""

    qualityChanged = pyqtSignal(object)
    """QualityResult of the current view, or None when it became stale."""
    groundTruthFailed = pyqtSignal(str)

    def __init__(self, window):
        super().__init__(window)
        self.win = window
        self.canvas = window.canvas
        self.active = False
        self.backend_b: str | None = None
        self.side_by_side = False
        self.show = "ab"
        self.quality: QualityResult | None = None
        self.status = ""
        """Why there are no quality numbers (loading, no reference, ...)."""
        self.stats_frame: Frame | None = None
        """Last frame whose per-side stats are complete (interactive or final)."""
        self._pending: tuple | None = None
        self._pending_task: WorkerTask | None = None
        self._store: GroundTruthStore | None = None
        self._gt_state: dict[str, str] = {}
        """split -> "loading" | "ready" | error message"""
        self._last_final: Frame | None = None
        self.metrics: dict[tuple, ViewMetrics] = {}
        """(backend, split, index) -> metrics at that dataset view, for this scene and weights."""
        self._metric_jobs: dict[tuple, MetricsJob] = {}
        """(backend, split, index) -> the job submitted for it (queued or running)."""
        self._metric_errors: dict[tuple, str] = {}
        self._weights: dict[str, int] = {}
        """backend -> how many times its weights changed (stamps jobs; older results are stale)."""
        self._epoch = 0
        """Scenes opened (stamps jobs)."""
        self._dataset_key: tuple | None = None
        """current_key() of the dataset view whose metrics are shown, with its reference label."""
        self.bench_dialog = None

        self.overlays = {"a": SideOverlay(self.canvas, "a"), "b": SideOverlay(self.canvas, "b")}
        self.canvas.installEventFilter(self)

        self.panel = ComparatorPanel()
        self.panel.activeToggled.connect(self.set_active)
        self.panel.backendAChosen.connect(self.set_backend_a)
        self.panel.backendBChosen.connect(self.set_backend_b)
        self.panel.layoutChosen.connect(self.set_side_by_side)
        self.panel.showChosen.connect(self.set_show)
        self.panel.heatMaxChanged.connect(self.set_heat_max)
        self.panel.benchmarkRequested.connect(self.open_benchmark)
        holder = QWidget()
        lay = QVBoxLayout(holder)
        lay.addWidget(self.panel)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(holder)
        scroll.setWidgetResizable(True)
        self.dock = QDockWidget("Compare", window)
        self.dock.setObjectName("compare-dock")
        self.dock.setWidget(scroll)
        self.dock.setFeatures(window.side_dock.features())
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        window.tabifyDockWidget(window.side_dock, self.dock)
        window.side_dock.raise_()

        self.loader_thread = QThread(self)
        self.loader_thread.setObjectName("ground-truth")
        self.loader = GroundTruthLoader()
        self.loader.moveToThread(self.loader_thread)
        self.loader_thread.start()
        self.loader.loaded.connect(self._on_gt_loaded)
        self.loader.failed.connect(self._on_gt_failed)

        self.metrics_thread = QThread(self)
        self.metrics_thread.setObjectName("compare-metrics")
        self.runner = MetricsRunner(window.worker.device)
        self.runner.moveToThread(self.metrics_thread)
        self.metrics_thread.start()
        self.runner.finished.connect(self._on_metrics_finished)
        self.runner.failed.connect(self._on_metrics_failed)

        self._build_actions()
        w = window.worker
        w.frameReady.connect(self._on_frame)
        w.taskFinished.connect(self._on_task_finished)
        w.taskFailed.connect(self._on_task_failed)
        w.backendLoaded.connect(self._on_backend_loaded)
        w.weightsPublished.connect(self._on_weights_published)
        w.backendFailed.connect(lambda *_: self._refresh_backends())
        window.sceneOpened.connect(self._on_scene_opened)
        window.viewRequested.connect(self._on_view_requested)
        window.backendChanged.connect(self._on_backend_a_changed)
        self._a = window.backend
        self._refresh_backends()

    # ------------------------------------------------------------------------------ actions
    def _build_actions(self) -> None:
        mb = self.win.menuBar()
        help_menu = next((a for a in mb.actions() if a.text().replace("&", "") == "Help"), None)
        menu = mb.addMenu("Co&mpare") if help_menu is None else mb.insertMenu(help_menu, QMenu("Co&mpare", mb)).menu()
        self.actions: dict[str, QAction] = {}

        def add(key, text, slot, shortcut=None, checkable=False):
            act = QAction(text, self.win)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            act.setCheckable(checkable)
            if checkable:
                act.toggled.connect(slot)
            else:
                act.triggered.connect(lambda _=False: slot())
            menu.addAction(act)
            self.win.addAction(act)
            self.actions[key] = act
            return act

        add("compare", "&Compare two backends", self.set_active, "C", checkable=True)
        add("swap", "&Swap sides", self.swap, "Shift+C")
        add("layout", "Divider / side by side", lambda: self.set_side_by_side(not self.side_by_side), "V")
        menu.addSeparator()
        add("reference", "Show the &reference (ground truth) as B", self.toggle_reference, "G")
        add("heatmap", "Difference &heatmap (|A−B|, errors vs reference, off)", self.cycle_heatmap, "X")
        menu.addSeparator()
        add("save", "Save the comparison &image…", self.save_image_dialog)
        add("bench", "&Benchmark…", self.open_benchmark, "Ctrl+B")
        menu.addAction(self.dock.toggleViewAction())

    # -------------------------------------------------------------------------------- state
    def available(self) -> list[str]:
        return [n for n in registry.BACKENDS if self.win.backend_selector.is_enabled(n)]

    def set_active(self, on: bool) -> bool:
        """Compare mode on (two backends) or off; False with a message when it cannot start."""
        on = bool(on)
        if on and not self.active:
            names = [n for n in self.available() if n != self.win.backend]
            if self.win.scene is None or self.win.backend is None or not names:
                self.win.statusBar().showMessage("Compare needs a scene with two trained backends "
                                                 "(distill KiloNeRF or R2L first)", 6000)
                self._sync_controls()
                return False
            if self.backend_b not in names:
                self.backend_b = names[0]
        if on == self.active:
            self._sync_controls()
            return True
        self.active = on
        self._invalidate()
        self.canvas.set_compare_style(side_by_side=self.side_by_side and on, sources=SHOW_MODES[self.show][1])
        for o in self.overlays.values():
            o.setVisible(on)
        if on:
            self.dock.show()
            self.dock.raise_()
        self.win.set_compare_backend(self.backend_b if on else None)
        self._sync_controls()
        self._update_overlays()
        return True

    def toggle(self) -> None:
        self.set_active(not self.active)

    def set_backend_a(self, name: str) -> None:
        if name == self.backend_b and self.active:
            self.swap()
        else:
            self.win.set_backend(name)

    def _on_backend_a_changed(self, name: str) -> None:
        """The window's backend (A) changed (keys 1/2/3): choosing B's backend swaps the sides."""
        previous, self._a = self._a, name
        if self.active and name == self.backend_b:
            others = [n for n in self.available() if n != name]
            self.backend_b = previous if previous in others else (others[0] if others else None)
            if self.backend_b is None:
                self.set_active(False)
                return
            self.win.set_compare_backend(self.backend_b)
        self._invalidate()
        self._sync_controls()

    def set_backend_b(self, name: str) -> None:
        if name == self.win.backend:
            self.swap()
            return
        self.backend_b = name
        if self.active:
            self._invalidate()
            self.win.set_compare_backend(name)
        self._sync_controls()

    def swap(self) -> None:
        if not self.active or self.backend_b is None:
            return
        a, b = self.win.backend, self.backend_b
        self.backend_b = a
        self.win.compare_backend = None  # set_backend must not see A == B
        self.win.set_backend(b)
        self.win.set_compare_backend(a)
        self._invalidate()
        self._sync_controls()

    def set_side_by_side(self, on: bool) -> None:
        self.side_by_side = bool(on)
        self.canvas.set_compare_style(side_by_side=self.side_by_side and self.active)
        self._invalidate()
        self._sync_controls()
        self.win.request_render()

    def set_show(self, show: str) -> None:
        if show not in SHOW_MODES:
            raise ValueError(f"unknown compare display '{show}' (known: {', '.join(SHOW_MODES)})")
        self.show = show
        self.canvas.set_compare_style(sources=SHOW_MODES[show][1])
        if show != "ab" and self.win.mode != "rgb":
            self.win.statusBar().showMessage("Heatmaps and the reference are shown in RGB mode", 4000)
        self._sync_controls()
        self._update_overlays()

    def toggle_reference(self) -> None:
        self.set_show("ab" if self.show == "ref" else "ref")

    def cycle_heatmap(self) -> None:
        order = ["ab", "diff_ab", "diff_ref"]
        self.set_show(order[(order.index(self.show) + 1) % len(order)] if self.show in order else "diff_ab")

    def set_heat_max(self, value: float) -> None:
        self.canvas.set_compare_style(heat_max=value)
        self.panel.heat_max.blockSignals(True)
        self.panel.heat_max.setValue(value)
        self.panel.heat_max.blockSignals(False)

    def _sync_controls(self) -> None:
        self.panel.set_state(self.active, self.side_by_side, self.show)
        act = self.actions["compare"]
        act.blockSignals(True)
        act.setChecked(self.active)
        act.blockSignals(False)
        self.panel.set_backends(self.available(), self.win.backend, self.backend_b)

    def _refresh_backends(self) -> None:
        self._sync_controls()

    def _on_scene_opened(self, _path: str) -> None:
        # open_scene already dropped the compare backend and the worker's tasks
        self.active = False
        self.canvas.set_compare_style(side_by_side=False, reference_frame=None)
        for o in self.overlays.values():
            o.hide()
        self._store = GroundTruthStore(self.win.scene) if self.win.scene is not None else None
        self._a = self.win.backend
        self._gt_state.clear()
        self._epoch += 1
        self._cancel_metrics()
        self.metrics.clear()
        self._metric_errors.clear()
        self._weights.clear()
        self.runner.forget(None)
        self._invalidate()
        self._sync_controls()
        self.win.request_render()

    # ------------------------------------------------------------------------------ quality
    def _invalidate(self) -> None:
        """The view (or a backend) changed: drop the quality of the old view and abort the
        metrics jobs the current view does not need."""
        if self._pending_task is not None:
            self._pending_task.cancel.set()
        self._pending = self._pending_task = None
        key = self.current_key()
        self._cancel_metrics(keep=self._needed_metrics(key))
        self._dataset_key = None
        if self.quality is not None or self.canvas.reference_frame is not None:
            self.quality = None
            self.canvas.set_compare_style(reference_frame=None)
            self.qualityChanged.emit(None)
        self.status = ""
        if key is not None and key[0] in ("gt", "gt-wait"):
            self._measure(None)  # a dataset view is measured at once, never when a frame is final
        else:
            self._update_overlays()

    def current_key(self, frame: Frame | None = None) -> tuple | None:
        """What the quality of the view on screen is measured against, as a cache key."""
        win = self.win
        if not self.active or win.camera is None or win.scene is None or self.backend_b is None:
            return None
        pair = (win.backend, self.backend_b)
        if at_dataset_view(win.camera):
            dv = dataset_view(win.scene, win.camera.dataset_index)
            if dv is not None:
                state = self._gt_state.get(dv.split)
                if state is None or state == "loading":
                    return ("gt-wait", dv.split, dv.index, *pair)
                if state == "ready" and self._store is not None and self._store.has_split(dv.split):
                    return ("gt", dv.split, dv.index, *pair)
        req = frame.request if frame is not None else win.current_request()
        return ("teacher", req, *pair)

    def _measure(self, frame: Frame | None) -> None:
        key = self.current_key(frame)
        if key is None or (self.quality is not None and self.quality.key == key) or self._pending == key:
            return
        if self._pending_task is not None:
            self._pending_task.cancel.set()
            self._pending = self._pending_task = None
        pair = key[-2:]
        if key[0] == "gt-wait":
            split = key[1]
            if split not in self._gt_state and self._store is not None:
                self._gt_state[split] = "loading"
                self.loader.request(self._store, split)
            self.status = f"loading ground truth ({split} split)…"
            self._update_overlays()
            return
        if key[0] == "gt":
            self._measure_dataset_view(key, frame)
            return
        if frame is None:  # the teacher reference needs the shown frame: measured when it arrives
            return
        if TEACHER not in self.win.infos:
            why = (f"{_label(TEACHER)} teacher not loaded" if self.win.backend_selector.is_enabled(TEACHER)
                   else f"no {_label(TEACHER)} teacher in this scene")
            self.status = f"no reference: {why}; snap to a dataset view with [ ]"
            self._update_overlays()
            return
        images = frame.images if frame.mode == "rgb" and len(frame.images) == 2 else None
        task = WorkerTask(key, teacher_quality_task(key, pair, frame.request, images))
        self._pending, self._pending_task = key, task
        self.status = "measuring…"
        self._update_overlays()
        self.win.worker.submit_task(task)

    def _needed_metrics(self, key: tuple | None) -> set:
        """The metrics (backend, split, index) the view of ``key`` shows."""
        if key is None or key[0] != "gt":
            return set()
        return {(name, key[1], key[2]) for name in key[3:]}

    def _cancel_metrics(self, keep: set = frozenset()) -> None:
        """Abort the metrics jobs not in ``keep`` (a running one stops at its next chunk)."""
        for k in [k for k in self._metric_jobs if k not in keep]:
            self._metric_jobs.pop(k).cancel.set()

    def _stamp(self, backend: str) -> tuple:
        return self._epoch, self._weights.get(backend, 0)

    def _measure_dataset_view(self, key: tuple, frame: Frame | None) -> None:
        """Both sides' metrics at the dataset view of ``key``: from the cache, else a job per side."""
        dv = dataset_view(self.win.scene, self.win.camera.dataset_index)
        data, split = self._store.split(dv.split)
        if dv.index >= len(split) or split.names[dv.index] != dv.name:
            self._gt_state[dv.split] = f"the dataset's {dv.split} images do not match the scene's cameras"
            self._measure(frame)
            return
        needed = [(name, dv.split, dv.index) for name in key[3:]]
        self._cancel_metrics(keep=set(needed))
        for k in needed:
            if k in self.metrics or k in self._metric_jobs or k in self._metric_errors:
                continue
            job = MetricsJob(k[0], dv.split, dv.index, split, data.near, data.far, tuple(data.background),
                             self.win.scene, self._stamp(k[0]))
            self._metric_jobs[k] = job
            self.runner.submit(job)
        self._dataset_key = (key, reference_label(dv.split, split.names[dv.index]))
        self.status = ""
        self._complete_dataset_view()

    def _complete_dataset_view(self) -> None:
        """Show the quality of the dataset view once both sides' metrics are in."""
        if self._dataset_key is None:
            self._update_overlays()
            return
        key, label = self._dataset_key
        sides = [self.metrics.get(k) for k in ((name, key[1], key[2]) for name in key[3:])]
        if all(sides) and (self.quality is None or self.quality.key != key):
            result = dataset_quality(key, label, sides)
            self._show_quality(result)
            return
        self._update_overlays()

    def _on_metrics_finished(self, job: MetricsJob, result: ViewMetrics) -> None:
        if self._metric_jobs.get(job.key) is job:
            del self._metric_jobs[job.key]
        if job.version != self._stamp(job.backend):
            return  # another scene or other weights since it was submitted
        self.metrics[job.key] = result
        self._complete_dataset_view()

    def _on_metrics_failed(self, job: MetricsJob, message: str) -> None:
        if self._metric_jobs.get(job.key) is not job:
            return
        del self._metric_jobs[job.key]
        if message != "aborted":
            self._metric_errors[job.key] = message
        self._update_overlays()

    def _forget_backend(self, name: str) -> None:
        """``name``'s weights changed: its metrics are stale (the other side's stay cached)."""
        self._weights[name] = self._weights.get(name, 0) + 1
        for d in (self.metrics, self._metric_errors):
            for k in [k for k in d if k[0] == name]:
                del d[k]
        for k in [k for k in self._metric_jobs if k[0] == name]:
            self._metric_jobs.pop(k).cancel.set()
        if self.quality is not None and self.quality.reference == "gt" and name in self.quality.backends:
            self.quality = None
            self.canvas.set_compare_style(reference_frame=None)
            self.qualityChanged.emit(None)

    def _on_backend_loaded(self, info) -> None:
        """The render thread (re)loaded a backend: measure it afresh from the scene."""
        self._forget_backend(info.name)
        self.runner.forget(info.name)
        self._refresh_backends()
        if self.active:
            self._retry()

    def _on_weights_published(self, name: str, state: dict, config) -> None:
        """A trainer's snapshot was hot-swapped into ``name``: the metrics jobs use it too."""
        self._forget_backend(name)
        self.runner.publish(name, state, config)
        if self.active:
            self._retry()

    def _on_view_requested(self) -> None:
        """The view may have changed (drag, resize, backend) or be the same pixels under
        another name (a snap onto the view already shown): re-key the quality."""
        if not self.active:
            return
        key = self.current_key()
        if ((self.quality is not None and self.quality.key != key) or (self._pending not in (None, key))
                or (self._dataset_key is not None and self._dataset_key[0] != key)):
            self._invalidate()
        self._retry()

    def _on_task_finished(self, tag, result) -> None:
        if tag != self._pending:
            return
        self._pending = self._pending_task = None
        if not isinstance(result, QualityResult) or result.key != self.current_key(self._last_final):
            return
        self._show_quality(result)

    def _show_quality(self, result: QualityResult) -> None:
        self.quality = result
        self.status = ""
        h, w = result.images[-1].shape[:2]
        ref = Frame(list(result.images), "rgb", w, h, w, h, result.backends, 0.0, 0.0, 0.0, final=True,
                    request=result.request)
        self.canvas.set_compare_style(reference_frame=ref)
        self._update_overlays()
        self.qualityChanged.emit(result)

    def _on_task_failed(self, tag, message: str) -> None:
        if tag != self._pending:
            return
        self._pending = self._pending_task = None
        self.status = "" if message == "aborted" else f"quality failed: {message}"
        self._update_overlays()

    def _on_gt_loaded(self, store, split: str) -> None:
        if store is not self._store:
            return
        self._gt_state[split] = "ready" if store.has_split(split) else f"the dataset has no {split} split"
        if not store.has_split(split):
            self.win.statusBar().showMessage(f"Ground truth: the dataset has no {split} split; "
                                             "comparing against the teacher", 6000)
        self._retry()

    def _on_gt_failed(self, store, split: str, message: str) -> None:
        if store is not self._store:
            return
        self._gt_state[split] = message
        self.win.statusBar().showMessage(f"Ground truth unavailable ({message}); comparing against the teacher",
                                         8000)
        self.groundTruthFailed.emit(message)
        self._retry()

    def _retry(self) -> None:
        """Measure the current view: at a dataset view at once (a metrics job per side renders the
        dataset camera at its native size, whatever the window shows), elsewhere the final frame
        on screen if it still shows the current view."""
        key = self.current_key()
        if key is not None and key[0] in ("gt", "gt-wait"):
            self._measure(None)
            return
        f = self._last_final
        if (self.active and f is not None and f.request == self.win.current_request()
                and f.backends == (self.win.backend, self.backend_b)):
            self._measure(f)

    # ------------------------------------------------------------------------------- frames
    def _on_frame(self, frame: Frame) -> None:
        if not self.active or len(frame.backends) < 2:
            return
        if self.quality is not None and self.quality.key != self.current_key(frame):
            self._invalidate()
        if frame.side_stats and (not frame.refining or frame.final):
            self.stats_frame = frame
        if frame.final and frame.request == self.win.current_request() \
                and frame.backends == (self.win.backend, self.backend_b):
            self._last_final = frame
            self._measure(frame)
        self._update_overlays()

    def side_lines(self, i: int) -> list[str]:
        """The overlay text of side ``i`` (0: A, 1: B)."""
        names = (self.win.backend, self.backend_b)
        name = names[i]
        title = f"{'AB'[i]} · {_label(name)}"
        q = self.quality
        if i == 1 and self.show == "ref" and q is not None:
            title += f"   (showing {q.reference_label})"
        lines = [title]
        f = self.stats_frame
        if f is not None and f.backends == names and len(f.side_stats) == 2:
            s = f.side_stats[i]
            fps = 1000.0 / max(s.render_ms, 1e-6)
            ms = f"{s.render_ms:7.1f}" if s.render_ms < 10_000 else f"{s.render_ms:7,.0f}"
            lines.append(f"{fps:6.1f} FPS  {ms} ms/frame @ {f.width}x{f.height}")
            lines.append(f"{s.samples_per_ray:6.1f} samples/ray  {s.flops_per_ray / 1e6:7.3f} MFLOPs/ray")
        info = self.win.infos.get(name) if name else None
        lines.append(f"params {info.parameters / 1e6:.3f} M" if info else "params -")
        if q is not None and q.backends == names:
            lines.append(format_quality(q.psnr[i], q.ssim[i]))
            lines.append(f"vs {q.reference_label}")
        elif self._dataset_key is not None and self._dataset_key[0][3:] == names:
            m, text = self._side_metrics(i)
            lines.append(text if m is None else format_quality(m.psnr, m.ssim))
            lines.append(f"vs {self._dataset_key[1]}")
        elif self.status:
            lines.append(self.status)
        return lines

    def _side_metrics(self, i: int) -> tuple[ViewMetrics | None, str]:
        """Side ``i``'s metrics at the dataset view shown, or why there are none yet."""
        key = self._dataset_key[0]
        k = (key[3 + i], key[1], key[2])
        m = self.metrics.get(k)
        if m is not None:
            return m, ""
        if k in self._metric_errors:
            return None, f"quality failed: {self._metric_errors[k]}"
        return None, COMPUTING

    def _update_overlays(self) -> None:
        if not self.active:
            self.panel.quality.setText("Quality: compare mode is off (C)")
            return
        for i, side in enumerate(("a", "b")):
            self.overlays[side].set_lines(self.side_lines(i))
        q = self.quality
        if q is None and self._dataset_key is not None:
            key, label = self._dataset_key
            cells = []
            for i, n in enumerate(key[3:]):
                m, text = self._side_metrics(i)
                cells.append((n, text, "") if m is None else (n, f"{m.psnr:.2f}", f"{m.ssim:.4f}"))
            rows = "".join(f"<tr><td><b>{'AB'[i]}</b> {_label(n)}</td><td align=right>{p}</td>"
                           f"<td align=right>{s}</td></tr>" for i, (n, p, s) in enumerate(cells))
            self.panel.quality.setText(f"Quality vs {label}:<table cellspacing=4>"
                                       f"<tr><th></th><th>PSNR dB</th><th>SSIM</th></tr>{rows}</table>")
            return
        if q is None:
            self.panel.quality.setText(f"Quality: {self.status or '-'}")
            return
        rows = "".join(
            f"<tr><td><b>{'AB'[i]}</b> {_label(n)}</td><td align=right>"
            f"{'ref.' if q.psnr[i] is None else f'{q.psnr[i]:.2f}'}</td><td align=right>"
            f"{'ref.' if q.ssim[i] is None else f'{q.ssim[i]:.4f}'}</td></tr>"
            for i, n in enumerate(q.backends))
        self.panel.quality.setText(f"Quality vs {q.reference_label}:<table cellspacing=4>"
                                   f"<tr><th></th><th>PSNR dB</th><th>SSIM</th></tr>{rows}</table>")

    def eventFilter(self, obj, event) -> bool:
        if obj is self.canvas and event.type() == QEvent.Type.Resize:
            for o in self.overlays.values():
                o.place()
        return False

    # ------------------------------------------------------------------------- image / bench
    def save_image_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.win, "Save comparison image",
                                              str(self.win._default_output("-compare.png")), "PNG (*.png)")
        if path:
            self.save_image(path)

    def save_image(self, path: str) -> bool:
        """Write the view exactly as shown (both sides, divider or heatmap) as PNG."""
        ok = self.canvas.grabFramebuffer().save(str(path))
        if ok:
            self.win.statusBar().showMessage(f"Comparison saved: {path}", 6000)
        else:
            self.win.show_error(f"Could not save {path}")
        return ok

    def open_benchmark(self) -> None:
        from viewer.panels.comparator_bench import BenchDialog

        if self.win.scene is None:
            self.win.show_error("Open a scene before running a benchmark.", kind="info")
            return
        if self.bench_dialog is None or self.bench_dialog.scene is not self.win.scene:
            if self.bench_dialog is not None:
                self.bench_dialog.close()
            self.bench_dialog = BenchDialog(self.win, self.win.scene, self._store, self.available(),
                                            self.win.worker.device)
        self.bench_dialog.show()
        self.bench_dialog.raise_()

    def shutdown(self) -> None:
        if self.bench_dialog is not None:
            self.bench_dialog.shutdown()
        self._cancel_metrics()
        if self.metrics_thread.isRunning():
            self.metrics_thread.quit()
            self.metrics_thread.wait()
        if self.loader_thread.isRunning():
            self.loader_thread.quit()
            self.loader_thread.wait()
