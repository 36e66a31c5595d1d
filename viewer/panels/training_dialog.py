"""Train → New training…: dataset, output scene, stages, preset (with its expected time), device,
sparse views; Start or Resume. Produces a ``viewer.train_worker.TrainRequest``.

Expected time per stage = the stage's steps (preset, or the override) divided by a steps/s rate,
capped by the preset's time budget when it has one:

1. the rate measured in an earlier run of the same stage and preset on this device (the training
   controller records the engine's steps/s when a stage ends, in QSettings), else
2. a stated reference rate from ``REFERENCE_RATES`` below (measured by this project on a 2-core
   CPU and on one H100; the dialog names the device it was measured on), else
3. none: the dialog says so, and the progress panel's ETA takes over once the job runs.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from PyQt6.QtCore import QSettings, Qt, QTimer
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from viewer.train_worker import STAGE_LABELS, TrainRequest, checkpoint_steps, read_saved_job

PRESETS = ("tiny", "quick", "standard", "long", "paper")
PRESET_HELP = {
    "tiny": "tiny: small networks, a few hundred steps; a CPU demo (and the tests)",
    "quick": "quick: minutes on a GPU; a rough model",
    "standard": "standard: the recommended recipe (on one GPU: teacher about 8 minutes, KiloNeRF 8, R2L 15)",
    "long": "long: more quality (20 minutes per stage on one GPU; R2L 50 minutes)",
    "paper": "paper: the papers' full recipes (hours to a day on one GPU)",
}

REFERENCE_RATES: dict[tuple[str, str, str], tuple[float, str]] = {
    # (stage, preset, device type) -> (steps per second, where it was measured).
    # CPU (tiny only; the other presets take many seconds per step on a CPU): this project's
    # 2-core machine, procedural 64x64 scene, 1 torch thread (teacher; 13.7 steps/s idle) and the
    # KiloNeRF / R2L preset notes (1500 steps in ~12 s, 1000 steps in ~48 s on 2 idle cores).
    ("teacher", "tiny", "cpu"): (12.0, "2-core CPU"),
    ("kilonerf", "tiny", "cpu"): (125.0, "2-core CPU"),
    ("r2l", "tiny", "cpu"): (21.0, "2-core CPU"),
    # CUDA: one H100, lego 400x400, the first 35 s of each teacher and 21 s of each distillation
    # from that teacher (viewer tools, 2026-11). R2L's GPU presets other than paper are bounded by
    # their time budgets; paper is the preset's design note (1.6M steps in ~20 h).
    ("teacher", "quick", "cuda"): (36.0, "H100 (lego 400x400)"),
    ("teacher", "standard", "cuda"): (38.9, "H100 (lego 400x400, a whole 500 s run, 2026-11-22)"),
    ("teacher", "paper", "cuda"): (54.0, "H100 (lego 400x400)"),
    ("kilonerf", "quick", "cuda"): (130.0, "H100 (lego 400x400)"),
    ("kilonerf", "standard", "cuda"): (123.0, "H100 (lego 400x400)"),
    ("kilonerf", "paper", "cuda"): (128.0, "H100 (lego 400x400)"),
    ("r2l", "paper", "cuda"): (22.0, "H100 (the preset's design notes)"),
}
RATE_KEY = "training/rates"


def device_kind(device: str) -> str:
    return device.split(":")[0].split(" ")[0]


def learned_rate_key(stage: str, preset: str, device_label: str) -> str:
    safe = device_label.replace("/", "_")
    return f"{RATE_KEY}/{stage}/{preset}/{safe}"


def stage_rate(settings: QSettings | None, stage: str, preset: str, device_label: str) -> tuple[float, str] | None:
    """(steps/s, source) for a stage on a device: measured here earlier, else stated, else None."""
    if settings is not None:
        v = settings.value(learned_rate_key(stage, preset, device_label))
        try:
            rate = float(v) if v is not None else 0.0
        except (TypeError, ValueError):
            rate = 0.0
        if rate > 0:
            return rate, f"measured in an earlier run on this {device_label}"
    ref = REFERENCE_RATES.get((stage, preset, device_kind(device_label)))
    if ref is not None:
        return ref[0], f"stated: measured on a {ref[1]}"
    return None


def record_rate(settings: QSettings, stage: str, preset: str, device_label: str, steps_per_s: float) -> None:
    """Remember a stage's measured speed for the next estimate (an EMA over runs)."""
    if not (steps_per_s > 0 and math.isfinite(steps_per_s)):
        return
    key = learned_rate_key(stage, preset, device_label)
    old = settings.value(key)
    try:
        old = float(old) if old is not None else 0.0
    except (TypeError, ValueError):
        old = 0.0
    settings.setValue(key, steps_per_s if old <= 0 else 0.5 * old + 0.5 * steps_per_s)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_stage(stage: str, preset: str, steps: int | None, rate: tuple[float, str] | None) -> tuple[float, str]:
    """(seconds or nan, one line saying how) for one stage."""
    from models.training.jobs import stage_config

    cfg = stage_config(stage, preset, {"steps": steps} if steps else None)
    budget = float(getattr(cfg, "time_budget_s", 0.0) or 0.0)
    label = STAGE_LABELS[stage]
    if rate is None:
        if budget > 0:
            return budget, (f"{label}: {cfg.steps} steps, at most {format_duration(budget)} (the preset's time "
                            "budget); speed on this device not measured yet")
        return float("nan"), f"{label}: {cfg.steps} steps; speed on this device not measured yet"
    seconds = cfg.steps / rate[0]
    how = f"{label}: {cfg.steps} steps at ~{rate[0]:.3g} steps/s ({rate[1]})"
    if budget > 0 and budget < seconds:
        return budget, f"{how}: capped by the {format_duration(budget)} time budget"
    return seconds, f"{how} ≈ {format_duration(seconds)}"


def preload_training_modules() -> None:
    """Import the training and data modules now (dialog open) rather than in the training thread
    when the job starts: imports hold the GIL and would stall the GUI thread there."""
    import PIL.PngImagePlugin  # noqa: F401

    import models.data.blender  # noqa: F401
    import models.data.llff  # noqa: F401
    import models.data.transforms_json  # noqa: F401
    import models.training.distill_kilonerf  # noqa: F401
    import models.training.distill_r2l  # noqa: F401
    import models.training.teacher  # noqa: F401
    import numpy.ctypeslib  # noqa: F401 - first used by a checkpoint write
    import torch

    # torch imports hundreds of modules (torch._dynamo) when the first optimiser is made and runs
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p])
    torch.amp.GradScaler("cuda", enabled=False)
    (p * 2).sum().backward()
    opt.step()


def available_devices() -> list[tuple[str, str]]:
    """(label, value) pairs for the device box; "auto" first."""
    import torch

    from models import devices

    best = devices.best_device()
    out = [(f"Automatic ({devices.describe(best)})", "auto")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(("mps (Apple GPU)", "mps"))
    out.append(("cpu", "cpu"))
    return out


class TrainingDialog(QDialog):
    """Non-blocking use: ``dlg.accepted`` → ``dlg.result_request`` (a TrainRequest)."""

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None,
                 dataset: str = "", output: str = ""):
        super().__init__(parent)
        self.setWindowTitle("New training")
        self.setObjectName("training-dialog")
        self.settings = settings
        self.result_request: TrainRequest | None = None
        self.summary: dict | None = None
        """describe_dataset() of the dataset field, or None when it is not a valid dataset."""
        self.existing: dict = {}
        """The output folder: {"scene": True, "backends": [...], "checkpoints": {stage: (step, total)},
        "saved": the interrupted GUI job with only its unfinished stages (or None), "resumable": bool}
        for an existing scene, else {}."""
        self.errors: dict[str, str] = {}
        self.saved_settings: dict[str, list[str]] = {}
        """Per-stage KEY=VALUE settings of the saved job that Resume continues (kept in its request)."""

        lay = QVBoxLayout(self)
        form = QFormLayout()
        lay.addLayout(form)

        # --- dataset
        self.dataset_edit = QLineEdit(dataset)
        self.dataset_edit.setPlaceholderText("folder with transforms_train.json, transforms.json or poses_bounds.npy")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_dataset)
        form.addRow("Dataset", _row(self.dataset_edit, browse))
        self.dataset_info = QLabel("")
        self.dataset_info.setObjectName("dataset-info")
        self.dataset_info.setWordWrap(True)
        form.addRow("", self.dataset_info)
        self.half_res = QCheckBox("Half resolution")
        self.factor = QComboBox()
        for f in (1, 2, 4, 8):
            self.factor.addItem(f"images_{f}" if f > 1 else "full resolution (images)", f)
        self.factor.setCurrentIndex(3)
        self.factor_label = QLabel("LLFF images")
        opts = _row(self.half_res, self.factor_label, self.factor)
        form.addRow("", opts)

        # --- output
        self.output_edit = QLineEdit(output)
        self.output_edit.setPlaceholderText("scene folder to write (new, or an existing scene to resume / distil)")
        browse_out = QPushButton("Browse…")
        browse_out.clicked.connect(self._browse_output)
        form.addRow("Output scene", _row(self.output_edit, browse_out))
        self.output_info = QLabel("")
        self.output_info.setObjectName("output-info")
        self.output_info.setWordWrap(True)
        form.addRow("", self.output_info)

        # --- stages
        stages_box = QGroupBox("Stages (run in this order, as one pipeline)")
        sl = QFormLayout(stages_box)
        self.stage_checks: dict[str, QCheckBox] = {}
        self.stage_steps: dict[str, QSpinBox] = {}
        for stage in STAGE_LABELS:
            cb = QCheckBox(STAGE_LABELS[stage])
            cb.setChecked(stage == "teacher")
            sp = QSpinBox()
            sp.setRange(0, 10_000_000)
            sp.setSingleStep(100)
            sp.setToolTip("Optimisation steps (0: the preset's)")
            self.stage_checks[stage], self.stage_steps[stage] = cb, sp
            sl.addRow(cb, _row(QLabel("steps"), sp))
        lay.addWidget(stages_box)

        # --- preset, time, device
        form2 = QFormLayout()
        lay.addLayout(form2)
        self.preset = QComboBox()
        for p in PRESETS:
            self.preset.addItem(PRESET_HELP[p], p)
        self.preset.setCurrentIndex(PRESETS.index("standard"))
        form2.addRow("Preset", self.preset)
        self.time_info = QLabel("")
        self.time_info.setObjectName("time-info")
        self.time_info.setWordWrap(True)
        self.time_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form2.addRow("Expected time", self.time_info)
        self.device = QComboBox()
        for label, value in available_devices():
            self.device.addItem(label, value)
        form2.addRow("Device", self.device)

        # --- sparse views (teacher)
        self.sparse_box = QGroupBox("Sparse views (NeRF teacher)")
        self.sparse_box.setCheckable(True)
        self.sparse_box.setChecked(False)
        sv = QFormLayout(self.sparse_box)
        self.sparse_views = QSpinBox()
        self.sparse_views.setRange(1, 1000)
        self.sparse_views.setValue(3)
        self.sparse_views.setToolTip("Train on only this many views (RegNeRF's protocols use 3, 6 or 9)")
        sv.addRow("Training views", self.sparse_views)
        self.sparse_reg = QComboBox()
        for label, mode in (("RegNeRF: depth smoothness on unseen patches, sample-space annealing, "
                             "gradient clipping", "regnerf"),
                            ("FreeNeRF: frequency regularisation and occlusion loss", "freenerf"),
                            ("RegNeRF and FreeNeRF together", "both"),
                            ("none (plain NeRF on the kept views)", "")):
            self.sparse_reg.addItem(label, mode)
        self.sparse_reg.setToolTip("How the teacher is regularised on the views it never sees")
        sv.addRow("Regularisation", self.sparse_reg)
        lay.addWidget(self.sparse_box)

        # --- advanced
        adv = QGroupBox("Live preview and checkpoints")
        al = QFormLayout(adv)
        self.snapshot_every = QDoubleSpinBox()
        self.snapshot_every.setRange(0.0, 3600.0)
        self.snapshot_every.setDecimals(1)
        self.snapshot_every.setSpecialValueText("preset")
        self.snapshot_every.setSuffix(" s")
        self.snapshot_every.setToolTip("Seconds between weight snapshots shown in the viewer while training")
        al.addRow("Preview every", self.snapshot_every)
        self.checkpoint_every = QDoubleSpinBox()
        self.checkpoint_every.setRange(0.0, 36000.0)
        self.checkpoint_every.setDecimals(1)
        self.checkpoint_every.setSpecialValueText("preset")
        self.checkpoint_every.setSuffix(" s")
        self.checkpoint_every.setToolTip("Seconds between checkpoints (a cancelled or killed job resumes "
                                         "from the last)")
        al.addRow("Checkpoint every", self.checkpoint_every)
        lay.addWidget(adv)

        # --- errors and buttons
        self.error_label = QLabel("")
        self.error_label.setObjectName("dialog-errors")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        lay.addWidget(self.error_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the interrupted job in the output folder from its checkpoints")
        self.resume_button.clicked.connect(self._resume)
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self._start)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        for b in (self.resume_button, self.start_button, cancel):
            buttons.addWidget(b)
        lay.addLayout(buttons)

        # --- wiring: dataset/output checks are debounced (typing), everything else immediate
        self._dataset_timer = QTimer(self, singleShot=True, interval=250)
        self._dataset_timer.timeout.connect(self.check_dataset)
        self._output_timer = QTimer(self, singleShot=True, interval=250)
        self._output_timer.timeout.connect(self.check_output)
        self.dataset_edit.textChanged.connect(lambda _: self._dataset_timer.start())
        self.output_edit.textChanged.connect(lambda _: self._output_timer.start())
        for w in (*self.stage_checks.values(),):
            w.toggled.connect(self.refresh)
        for w in (*self.stage_steps.values(), self.sparse_views):
            w.valueChanged.connect(self.refresh)
        self.preset.currentIndexChanged.connect(self.refresh)
        self.device.currentIndexChanged.connect(self.refresh)
        self.sparse_box.toggled.connect(self.refresh)
        self.check_dataset()
        self.check_output()
        self.resize(640, self.sizeHint().height())
        preload_training_modules()

    # ------------------------------------------------------------------------------ checks
    def check_dataset(self) -> bool:
        """Detect and summarise the dataset (metadata and one image header only); errors inline."""
        from models.data.detect import describe_dataset

        self._dataset_timer.stop()
        path = self.dataset_edit.text().strip()
        self.summary = None
        self.errors.pop("dataset", None)
        if not path:
            self.dataset_info.setText("<span style='color: gray'>choose a dataset folder</span>")
            self.errors["dataset"] = "Choose a dataset folder."
        else:
            try:
                self.summary = describe_dataset(Path(path).expanduser())
            except Exception as e:  # noqa: BLE001 - any problem with the folder is shown inline
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.errors["dataset"] = msg
                self.dataset_info.setText(f"<span style='color: #c62828'>✗ {_esc(msg)}</span>")
            else:
                s = self.summary
                kind = {"blender": "Blender", "procedural": "procedural (Blender format)", "llff": "LLFF",
                        "transforms_json": "transforms.json"}.get(s["kind"], s["kind"])
                splits = " / ".join(f"{k} {v}" for k, v in s["splits"].items())
                self.dataset_info.setText(f"<span style='color: #2e7d32'>✓</span> {kind}: {splits} images, "
                                          f"{s['width']}×{s['height']} px")
        kind = self.summary["kind"] if self.summary else None
        self.half_res.setVisible(kind in ("blender", "procedural"))
        self.factor.setVisible(kind == "llff")
        self.factor_label.setVisible(kind == "llff")
        if self.summary and not self.output_edit.text().strip():
            root = Path(self.summary["root"])
            self.output_edit.setText(str(root.parent / f"{root.name}_scene"))
        self.refresh()
        return self.summary is not None

    def check_output(self) -> None:
        """Say what the output folder holds: nothing (new scene), a scene (what is trained, which
        checkpoints), or something else (an error)."""
        from models.scene import Scene

        self._output_timer.stop()
        path = self.output_edit.text().strip()
        self.existing = {}
        self.errors.pop("output", None)
        if not path:
            self.output_info.setText("")
            self.errors["output"] = "Choose the output scene folder."
            self.refresh()
            return
        out = Path(path).expanduser()
        if (out / Scene.MANIFEST).is_file():
            try:
                scene = Scene.load(out)
            except Exception as e:  # noqa: BLE001
                self.errors["output"] = f"{out}: {e}"
                self.output_info.setText(f"<span style='color: #c62828'>✗ {_esc(str(e))}</span>")
                self.refresh()
                return
            ckpts = checkpoint_steps(out)
            job = read_saved_job(out)
            saved, remaining = None, []
            if job is not None:
                remaining = [st for st in job[0].stages if st not in job[1]]
                saved = dataclasses.replace(job[0], stages=remaining) if remaining else None
            self.existing = {"scene": True, "backends": sorted(scene.backends), "checkpoints": ckpts, "saved": saved,
                             "resumable": bool(remaining) if job is not None
                             else any(st < tot for st, tot in ckpts.values())}
            trained = ", ".join(scene.backends) if scene.backends else "nothing yet"
            parts = [f"Existing scene (trained: {trained})."]
            if ckpts:
                parts.append("Checkpoints: " + ", ".join(
                    f"{STAGE_LABELS[s]} at step {st} of {tot}" for s, (st, tot) in ckpts.items()) + ".")
            if saved is not None:
                parts.append(f"Interrupted job: {' → '.join(saved.stages)} left, preset {saved.preset}.")
            if self.existing["resumable"]:
                parts.append("<b>Resume</b> continues from the checkpoints; <b>Start</b> begins again.")
            self.output_info.setText(" ".join(parts))
            if not self.dataset_edit.text().strip() and scene.dataset.get("path"):
                self.dataset_edit.setText(str(scene.dataset["path"]))
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            self.errors["output"] = f"{out} exists, is not empty and holds no scene.json; choose another folder."
            self.output_info.setText(f"<span style='color: #c62828'>✗ {_esc(self.errors['output'])}</span>")
        else:
            self.output_info.setText("A new scene folder will be created.")
        self.refresh()

    def refresh(self) -> None:
        """Re-check the cross-field rules, the time estimate and the buttons."""
        for key in ("stages", "sparse"):
            self.errors.pop(key, None)
        stages = self.stages()
        for stage, sp in self.stage_steps.items():
            sp.setEnabled(self.stage_checks[stage].isChecked())
            sp.setSpecialValueText(f"preset ({self._preset_steps(stage)})")
        if not stages:
            self.errors["stages"] = "Tick at least one stage."
        elif "teacher" not in stages and "nerf" not in self.existing.get("backends", []):
            self.errors["stages"] = ("KiloNeRF and R2L are distilled from a NeRF teacher: tick “NeRF teacher”, "
                                     "or choose an output scene that already has one.")
        self.sparse_box.setEnabled("teacher" in stages)
        if self.sparse_box.isChecked() and "teacher" in stages and self.summary:
            n_train = int(self.summary["splits"].get("train", 0))
            if self.sparse_views.value() > n_train:
                self.errors["sparse"] = f"Sparse views: the dataset has only {n_train} training views."
        self._update_time()
        order = ("dataset", "output", "stages", "sparse")
        msgs = [self.errors[k] for k in order if k in self.errors]
        self.error_label.setText("\n".join(msgs))
        self.error_label.setVisible(bool(msgs))
        self.start_button.setEnabled(not msgs)
        can_resume = bool(self.existing.get("resumable")) and ("output" not in self.errors)
        can_resume = can_resume and (self.existing.get("saved") is not None or not msgs)
        self.resume_button.setEnabled(can_resume)
        # an interrupted job in the output folder: Resume is the default (Enter), Start begins again
        self.resume_button.setDefault(can_resume)
        self.start_button.setDefault(not can_resume)
        self.start_button.setText("Start over" if can_resume else "Start")
        self.start_button.setToolTip("Train every selected stage from scratch (the checkpoints are replaced)"
                                     if can_resume else "")

    def _preset_steps(self, stage: str) -> int:
        from models.training.jobs import stage_config

        return int(stage_config(stage, self.preset.currentData()).steps)

    def _update_time(self) -> None:
        from models import devices

        stages = self.stages()
        if not stages:
            self.time_info.setText("")
            return
        try:
            dev = devices.resolve_device(None if self.device.currentData() == "auto" else self.device.currentData())
            label = devices.describe(dev)
        except Exception as e:  # noqa: BLE001
            self.time_info.setText(str(e))
            return
        preset = self.preset.currentData()
        total, lines = 0.0, []
        for stage in stages:
            rate = stage_rate(self.settings, stage, preset, label)
            secs, how = estimate_stage(stage, preset, self.stage_steps[stage].value() or None, rate)
            total += secs
            lines.append(how)
        head = (f"<b>≈ {format_duration(total)}</b> on {label}" if math.isfinite(total)
                else f"<b>unknown</b> on {label} (the progress panel shows the ETA once it runs)")
        self.time_info.setText(head + "<br><span style='color: gray'>" + "<br>".join(_esc(x) for x in lines)
                               + "</span>")

    # ------------------------------------------------------------------------------ values
    def stages(self) -> list[str]:
        return [s for s, cb in self.stage_checks.items() if cb.isChecked()]

    def request(self, resume: bool = False) -> TrainRequest:
        kind = self.summary["kind"] if self.summary else None
        options: dict = {}
        if kind in ("blender", "procedural") and self.half_res.isChecked():
            options["half_res"] = True
        if kind == "llff":
            options["factor"] = int(self.factor.currentData())
        sparse = self.sparse_box.isChecked() and "teacher" in self.stages()
        return TrainRequest(
            dataset=str(Path(self.dataset_edit.text().strip()).expanduser()),
            output=str(Path(self.output_edit.text().strip()).expanduser()),
            stages=self.stages(),
            preset=self.preset.currentData(),
            steps={s: sp.value() for s, sp in self.stage_steps.items() if sp.value() and s in self.stages()},
            device=self.device.currentData(),
            sparse_views=self.sparse_views.value() if sparse else 0,
            sparse_regularise=(self.sparse_reg.currentData() or False) if sparse else False,
            dataset_options=options,
            snapshot_every_s=self.snapshot_every.value() or None,
            checkpoint_every_s=self.checkpoint_every.value() or None,
            resume=resume,
            # a resumed job keeps the per-stage settings it was started with (`pipeline --set`)
            settings={s: v for s, v in self.saved_settings.items() if s in self.stages()} if resume else {},
        )

    def apply_request(self, r: TrainRequest) -> None:
        """Fill the form from a request (a saved job, for Resume)."""
        self.saved_settings = dict(r.settings)
        self.dataset_edit.setText(r.dataset)
        self.check_dataset()
        for stage, cb in self.stage_checks.items():
            cb.setChecked(stage in r.stages)
            self.stage_steps[stage].setValue(int(r.steps.get(stage, 0) or 0))
        if r.preset in PRESETS:
            self.preset.setCurrentIndex(PRESETS.index(r.preset))
        i = self.device.findData(r.device)
        if i >= 0:
            self.device.setCurrentIndex(i)
        self.sparse_box.setChecked(bool(r.sparse_views))
        if r.sparse_views:
            self.sparse_views.setValue(r.sparse_views)
            mode = "regnerf" if r.sparse_regularise is True else (r.sparse_regularise or "")
            self.sparse_reg.setCurrentIndex(max(0, self.sparse_reg.findData(mode)))
        self.half_res.setChecked(bool(r.dataset_options.get("half_res")))
        if "factor" in r.dataset_options:
            j = self.factor.findData(int(r.dataset_options["factor"]))
            if j >= 0:
                self.factor.setCurrentIndex(j)
        self.snapshot_every.setValue(r.snapshot_every_s or 0.0)
        self.checkpoint_every.setValue(r.checkpoint_every_s or 0.0)
        self.refresh()

    # ----------------------------------------------------------------------------- buttons
    def _start(self) -> None:
        self.check_dataset()
        self.check_output()
        if not self.start_button.isEnabled():
            return
        self.result_request = self.request(resume=False)
        self.accept()

    def _resume(self) -> None:
        self.check_output()
        saved = self.existing.get("saved")
        if saved is not None:
            output = self.output_edit.text()
            self.apply_request(saved)
            self.output_edit.setText(output)
            self.check_output()
        if not self.resume_button.isEnabled() or self.errors:
            return
        self.result_request = self.request(resume=True)
        self.accept()

    def _browse_dataset(self) -> None:
        start = self.dataset_edit.text() or (self.settings.value("last_dir", "") if self.settings else "")
        path = QFileDialog.getExistingDirectory(self, "Dataset folder", str(start))
        if path:
            self.dataset_edit.setText(path)
            self.check_dataset()

    def _browse_output(self) -> None:
        start = self.output_edit.text() or self.dataset_edit.text()
        path = QFileDialog.getExistingDirectory(self, "Output scene folder", str(Path(start).parent) if start else "")
        if path:
            self.output_edit.setText(path)
            self.check_output()


def _row(*widgets) -> QWidget:
    w = QWidget()
    h = QHBoxLayout(w)
    h.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        h.addWidget(x, 1 if isinstance(x, QLineEdit) else 0)
    return w


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
