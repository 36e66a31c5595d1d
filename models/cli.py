"""Headless commands behind ``main.py``: make-scene, train, distill, pipeline, eval, render.

Every command turns the project's own exceptions into one readable line (exit code 2); only
genuine bugs produce tracebacks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from models import devices

KNOWN_ERRORS: tuple[type[BaseException], ...] = ()


def known_errors() -> tuple[type[BaseException], ...]:
    from models.backends.base import BackendUnavailable
    from models.data import DatasetError
    from models.scene import SceneError
    from models.storage import StorageError
    from models.training.engine import TrainingError

    # OSError: files a command cannot read or write (missing, a folder, read-only, a full disk);
    # its message names the file
    return (DatasetError, SceneError, StorageError, TrainingError, BackendUnavailable, ValueError, OSError)


class Progress:
    """A tqdm progress bar fed by training events (stderr; ETA and rate included)."""

    def __init__(self, quiet: bool = False, events: str | None = None):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.quiet = quiet
        self.stage = None
        self.events = open(events, "a", encoding="utf-8") if events else None
        """``--events FILE``: one JSON line per validation, log, checkpoint and end event, and per
        step event at most every 2 s (step, seconds, losses, steps/s)."""
        self._last_step_line = 0.0

    def record(self, ev) -> None:
        if self.events is None:
            return
        if ev.kind == "step":
            if ev.elapsed_s - self._last_step_line < 2.0:
                return
            self._last_step_line = ev.elapsed_s
        if ev.kind in ("snapshot", "paused", "resumed"):
            return
        row = {"kind": ev.kind, "stage": ev.stage, "step": ev.step, "total_steps": ev.total_steps,
               "elapsed_s": round(ev.elapsed_s, 2), "steps_per_s": round(ev.steps_per_s, 3),
               "losses": {k: (v if math.isfinite(v) else None) for k, v in ev.losses.items()}}
        if ev.psnr is not None:
            row["psnr"] = ev.psnr
        if ev.message:
            row["message"] = ev.message
        if ev.metrics:
            row["metrics"] = ev.metrics
        self.events.write(json.dumps(row) + "\n")
        self.events.flush()

    def __call__(self, ev) -> None:
        self.record(ev)
        if ev.kind == "started":
            self.close_bar()
            self.stage = ev.stage
            # a progress bar in per mille of the job (steps, or time for a time-bounded job), with
            # the step count and the ETA the job reports
            self.bar = self._tqdm(total=1000, initial=round(1000 * ev.progress), desc=ev.stage, dynamic_ncols=True,
                                  disable=self.quiet, mininterval=0.5,
                                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")
        elif ev.kind == "step" and self.bar is not None:
            self.bar.n = round(1000 * ev.progress)
            post = {"step": f"{ev.step}"}
            post.update({k: f"{v:.4g}" for k, v in ev.losses.items() if k in ("loss", "psnr")})
            if ev.steps_per_s > 0:
                post["it/s"] = f"{ev.steps_per_s:.3g}"
            if math.isfinite(ev.eta_s):
                post["eta"] = f"{ev.eta_s / 60:.1f} min" if ev.eta_s >= 90 else f"{ev.eta_s:.0f} s"
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif ev.kind == "validation":
            extra = ev.metrics.get("psnr_vs_teacher")
            self.write(f"[{ev.stage}] step {ev.step}: validation PSNR {ev.psnr:.2f} dB"
                       + (f" (against its teacher on random views: {extra:.2f} dB)" if extra is not None else ""))
        elif ev.kind in ("log", "cancelled", "failed"):
            self.write(f"[{ev.stage}] {ev.message}")
        elif ev.kind == "finished":
            if self.bar is not None:
                self.bar.n = 1000
                self.bar.refresh()
            self.write(f"[{ev.stage}] finished: {ev.message}")
            self.close_bar()

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        elif not self.quiet:
            print(msg, file=sys.stderr)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.events is not None:
            self.events.close()
            self.events = None


# ---------------------------------------------------------------------------------- commands
def cmd_make_scene(a) -> int:
    from models.data.procedural import ProceduralScene

    views = tuple(int(x) for x in a.views.split(",")) if "," in str(a.views) else (int(a.views), 8, 8)
    out = ProceduralScene().write_dataset(Path(a.out), size=a.size, views=views)
    print(f"wrote procedural dataset to {out} ({a.size}x{a.size}; train/val/test = {views})")
    return 0


def dataset_options(a) -> dict:
    opts = {}
    if getattr(a, "half_res", False):
        opts["half_res"] = True
    if getattr(a, "factor", None):
        opts["factor"] = a.factor
    return opts


def train_overrides(a) -> dict:
    """The teacher-config overrides that ``train``'s options ask for (``stage_overrides``, as the
    training dialog and ``pipeline`` build them)."""
    from models.training.jobs import stage_overrides

    return stage_overrides("teacher", a.preset, steps=a.steps, views=a.views, sparse_reg=a.sparse_reg,
                           time_budget_s=a.time_budget, checkpoint_every_s=a.checkpoint_every,
                           cuda_graph=getattr(a, "cuda_graph", False),
                           samples_per_step=getattr(a, "samples_per_step", None), settings=a.set)


def cmd_train(a) -> int:
    from models.data import load_dataset
    from models.training.jobs import StageSpec, run_pipeline, stage_config
    from models.training.pipeline import open_training_scene

    stage_config("teacher", a.preset)  # an unknown preset is an error before anything starts
    overrides = train_overrides(a)  # so are bad options: nothing is written before they are checked
    device = devices.resolve_device(a.device)
    opts = dataset_options(a)
    data = load_dataset(a.data, **opts)
    scene = open_training_scene(a.out, data, opts, a.data_mismatch_ok)
    progress = Progress(a.quiet, a.events)
    print(f"training NeRF teacher on {data.kind} dataset {data.root} ({len(data.splits['train'])} train views, "
          f"{data.splits['train'].width}x{data.splits['train'].height}) on {devices.describe(device)}; "
          f"preset {a.preset}; scene folder {scene.root}", file=sys.stderr)
    try:
        run_pipeline(scene, data, [StageSpec("teacher", a.preset, overrides)], device, progress, resume=not a.restart)
    finally:
        progress.close()
    print(f"teacher saved to {scene.root}")
    return 0


def distill_overrides(a) -> dict:
    """The stage-config overrides that ``distill``'s options ask for (``stage_overrides``, as the
    training dialog and ``pipeline`` build them; validated there)."""
    from models.training.jobs import stage_overrides

    return stage_overrides(a.backend, a.preset, steps=a.steps, time_budget_s=a.time_budget,
                           checkpoint_every_s=a.checkpoint_every, variant=a.variant, batch_rays=a.batch_rays,
                           pseudo=a.pseudo, pseudo_teacher=a.teacher, settings=a.set)


def cmd_distill(a) -> int:
    from models.scene import Scene
    from models.training import distributed
    from models.training.jobs import StageSpec, dataset_for_scene, run_pipeline

    device = devices.resolve_device(a.device)
    overrides = distill_overrides(a)
    info = distributed.init_from_environment(device.type)  # torchrun: one process per GPU (or CPU rank)
    if info.enabled and a.backend != "r2l":
        raise ValueError("multi-process distillation (torchrun) is implemented for --backend r2l")
    scene = Scene.load(Path(a.scene))
    data = dataset_for_scene(scene, a.data, a.data_mismatch_ok)
    progress = Progress(a.quiet or not info.is_main, a.events if info.is_main else None)
    try:
        run_pipeline(scene, data, [StageSpec(a.backend, a.preset, overrides)], device,
                     progress if info.is_main else (lambda e: None), resume=not a.restart)
    finally:
        progress.close()
        distributed.shutdown()
    if info.is_main:
        print(f"{a.backend} saved to {scene.root}" + (f" ({info.world} processes)" if info.enabled else ""))
    return 0


def pipeline_request(a):
    """The ``TrainRequest`` that ``pipeline``'s options describe, checked (``check_request``)
    before anything is loaded or written."""
    from models.training.pipeline import TrainRequest, check_request, parse_stages, stage_settings

    stages = parse_stages(a.stages)
    request = TrainRequest(dataset=str(Path(a.data).expanduser().absolute()),
                           output=str(Path(a.out).expanduser().absolute()), stages=stages, preset=a.preset,
                           settings=stage_settings(a.set, stages), device=a.device or "auto",
                           dataset_options=dataset_options(a), checkpoint_every_s=a.checkpoint_every,
                           resume=not a.restart)
    check_request(request)
    return request


def cmd_pipeline(a) -> int:
    """Train the stages of a request in order, as the viewer's training dialog does; a rerun of the
    same command skips the stages the scene's saved job completed and resumes the others from
    their checkpoints. The first Ctrl-C stops at the next step with a checkpoint written there."""
    import signal
    import threading

    from models.training.engine import JobCancelled, JobControl
    from models.training.pipeline import run_training, stages_done

    request = pipeline_request(a)
    done = [] if a.restart else stages_done(request)
    if done == request.stages:
        print(f"{', '.join(done)} already trained in {request.output} by this pipeline with these settings; "
              "nothing to resume (--restart trains again)")
        return 0
    control = JobControl()
    progress = Progress(a.quiet, a.events)

    def stop(signum, frame):
        if control.cancelled:
            raise KeyboardInterrupt
        control.cancel()
        progress.write("stopping after this step with a checkpoint (Ctrl-C again to stop at once)")

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop) if on_main_thread else None
    try:
        run_training(request, progress, control, done=done, allow_mismatch=a.data_mismatch_ok)
        cancelled = False
    except JobCancelled:
        cancelled = True
    finally:
        if on_main_thread:
            signal.signal(signal.SIGINT, previous)
        progress.close()
    if cancelled:
        print("interrupted (run the same command to resume from the last checkpoint)", file=sys.stderr)
        return 130
    print(f"{', '.join(s for s in request.stages if s not in done)} saved to {request.output}")
    return 0


def backends_arg(scene, value: str) -> list[str]:
    from models.backends.registry import BACKENDS

    if value == "all":
        return [n for n, cls in BACKENDS.items() if cls.availability(scene)[0]]
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        if n not in BACKENDS:
            raise ValueError(f"unknown backend '{n}' (known: {', '.join(BACKENDS)})")
    return names


def accel_for(a, name: str) -> str:
    """The execution path ``--accel`` asks of backend ``name`` ("auto" where it names none)."""
    return (getattr(a, "accel", None) or {}).get(name, "auto")


def cmd_eval(a) -> int:
    from tqdm import tqdm

    from models.evaluation import evaluate
    from models.scene import Scene
    from models.training.jobs import dataset_for_scene

    device = devices.resolve_device(a.device)
    scene = Scene.load(Path(a.scene))
    data = dataset_for_scene(scene, a.data, a.data_mismatch_ok)
    if a.split not in data.splits:
        raise ValueError(f"dataset has no '{a.split}' split (has: {', '.join(data.splits)})")
    split = data.splits[a.split]
    report = {"scene": str(scene.root), "split": a.split, "device": devices.describe(device), "backends": {}}
    from models.backends.registry import load_backend

    for name in backends_arg(scene, a.backend):
        backend = load_backend(scene, name, device, accel_for(a, name))
        n = len(split) if a.max_views is None else min(a.max_views, len(split))
        with tqdm(total=n, desc=f"eval {name}", unit="view", disable=a.quiet) as bar:
            res = evaluate(backend, split, data.near, data.far, data.background, a.size, a.max_views, a.precision,
                           on_view=lambda i, n, row: bar.update(1))
        res["accel"], res["path"] = backend.accel, backend.active_path()
        report["backends"][name] = res
        print(f"\n{name}: {res['n_views']} {a.split} views at {res['width']}x{res['height']}, "
              f"execution path {res['path']}")
        print(f"{'view':<24}{'PSNR':>8}{'SSIM':>8}{'ms':>10}")
        for v in res["views"]:
            print(f"{v['name']:<24}{v['psnr']:8.2f}{v['ssim']:8.4f}{v['ms']:10.1f}")
        print(f"{'mean':<24}{res['psnr']:8.2f}{res['ssim']:8.4f}{res['ms_mean']:10.1f}")
        if a.split == "test" and a.max_views is None and a.size is None:
            scene.set_metrics(name, {"test_psnr": round(res["psnr"], 3), "test_ssim": round(res["ssim"], 4)})
    if a.json:
        from models.storage import write_json

        write_json(Path(a.json), report)
        print(f"wrote {a.json}")
    return 0


def cmd_render(a) -> int:
    import imageio.v3 as iio
    from tqdm import tqdm

    from models.backends.base import RenderRequest
    from models.cameras import Camera
    from models.scene import Scene

    if Path(a.out).suffix.lower() not in ("", ".mp4", ".gif"):
        raise ValueError(f"--out {a.out}: write FILE.mp4, FILE.gif or a folder (no extension) for PNG frames")
    if a.views and not all(v.strip().lstrip("-").isdigit() for v in a.views.split(",")):
        raise ValueError(f"--views {a.views}: expected camera indices such as 0,8")
    device = devices.resolve_device(a.device)
    scene = Scene.load(Path(a.scene))
    from models.backends.registry import load_backend

    backend = load_backend(scene, a.backend, device, accel_for(a, a.backend))
    cams: list[Camera]
    if a.path == "test":
        cams = scene.camera_list("test") or scene.camera_list("train")
        if not cams:
            raise ValueError(f"{scene.root}: scene has no dataset cameras for --path test")
    else:
        ref = (scene.camera_list("train") or scene.camera_list("test"))
        if not ref:
            raise ValueError(f"{scene.root}: scene has no cameras to derive an orbit from")
        cams = orbit_cameras(scene, ref, a.frames)
    if a.views:
        idx = [int(i) for i in a.views.split(",")]
        bad = [i for i in idx if not 0 <= i < len(cams)]
        if bad:
            raise ValueError(f"--views {bad}: only {len(cams)} cameras on this path")
        cams = [cams[i] for i in idx]
    if a.output != "rgb" and a.output not in backend.supported_outputs:
        raise ValueError(f"{backend.label} has no {a.output} output")
    frames = []
    out = Path(a.out)
    for i, cam in enumerate(tqdm(cams, desc=f"render {a.backend}", unit="frame", disable=a.quiet)):
        if a.size:
            s = a.size / max(cam.width, cam.height)
            cam = cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        req = RenderRequest.from_camera(cam, scene.near, scene.far, background=tuple(scene.background),
                                        outputs=frozenset({"rgb", "depth", "acc"}) & backend.supported_outputs | {"rgb"},
                                        precision=a.precision)
        res = backend.render(req)
        if a.output == "rgb":
            img = (res.rgb.numpy() * 255 + 0.5).astype(np.uint8)
        else:
            img = colormap(res.depth if a.output == "depth" else res.acc, res.acc, a.output)
        frames.append(img)
        if out.suffix == "":
            out.mkdir(parents=True, exist_ok=True)
            iio.imwrite(out / f"{i:04d}.png", img)
    if out.suffix.lower() in (".mp4", ".gif"):
        from models.video import write_video

        write_video(out, frames, fps=a.fps)
    print(f"wrote {len(frames)} frames to {out}")
    return 0


def doctor_checks(path: Path):
    """(what, problem or None) for everything ``doctor`` checks in a scene or dataset folder."""
    from models.backends.registry import create
    from models.data import load_dataset
    from models.scene import Scene
    from models.training.engine import read_checkpoint
    from models.training.jobs import dataset_for_scene

    def attempt(what, fn):
        try:
            detail = fn()
            return what + (f": {detail}" if detail else ""), None
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            return what, (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    if not path.exists():
        yield str(path), "no such file or folder"
        return
    if not (path / "scene.json").is_file():
        yield attempt(f"dataset {path}", lambda: (lambda d: f"{d.kind}, " + ", ".join(
            f"{k} {len(v)} views of {v.width}x{v.height}" for k, v in d.splits.items()))(load_dataset(path)))
        return
    found = attempt(f"scene manifest {path / 'scene.json'}", lambda: None)
    try:
        scene = Scene.load(path)
    except Exception as e:  # noqa: BLE001
        yield found[0], str(e).strip().splitlines()[0]
        return
    yield found
    for name in scene.backends:
        yield attempt(f"{name} weights", lambda name=name: (create(name, "cpu").load(scene), "load on the CPU")[1])
    if scene.occupancy:
        yield attempt("occupancy grid", lambda: "x".join(map(str, scene.load_occupancy().shape)))
    yield attempt(f"dataset {scene.dataset.get('path')}", lambda: (dataset_for_scene(scene), "matches the scene")[1])
    for ckpt in sorted(scene.checkpoint_dir.glob("*.safetensors")) if scene.checkpoint_dir.is_dir() else []:
        if ckpt.name == "r2l_pseudo.safetensors" or ckpt.name.startswith("r2l_pseudo."):
            continue
        yield attempt(f"checkpoint {ckpt.name}", lambda ckpt=ckpt: f"step {read_checkpoint(ckpt)[0]}")


def cmd_doctor(a) -> int:
    problems = 0
    for what, problem in doctor_checks(Path(a.path)):
        if problem is None:
            print(f"ok       {what}")
        else:
            problems += 1
            print(f"problem  {what}: {problem}")
    print(f"{problems} problem{'s' if problems != 1 else ''} found in {a.path}")
    return 2 if problems else 0


def colormap(values: torch.Tensor, acc: torch.Tensor | None, kind: str) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8: depth with turbo over the opaque pixels' range, opacity with viridis."""
    import matplotlib

    v = values.float()
    if kind == "depth":
        d = v / acc.clamp_min(1e-4) if acc is not None else v  # depth of the opaque part
        mask = acc > 0.5 if acc is not None else torch.ones_like(d, dtype=torch.bool)
        lo, hi = (float(d[mask].quantile(0.01)), float(d[mask].quantile(0.99))) if mask.any() else (0.0, 1.0)
        x = ((d - lo) / max(hi - lo, 1e-6)).clamp(0, 1).numpy()
        rgb = matplotlib.colormaps["turbo"](x)[..., :3]
        if acc is not None:
            a = acc.clamp(0, 1).numpy()[..., None]
            rgb = rgb * a + (1 - a)  # transparent pixels white
    else:
        rgb = matplotlib.colormaps["viridis"](v.clamp(0, 1).numpy())[..., :3]
    return (rgb * 255 + 0.5).astype(np.uint8)


def cmd_bench(a) -> int:
    from models.bench import markdown_table, run_bench
    from models.scene import Scene
    from models.training.jobs import dataset_for_scene

    device = devices.resolve_device(a.device)
    scene = Scene.load(Path(a.scene))
    data = dataset_for_scene(scene, a.data, a.data_mismatch_ok)
    names = backends_arg(scene, a.backends)
    if not names:
        raise ValueError(f"{scene.root}: no trained backends to benchmark")
    if a.out and Path(a.out).exists() and not Path(a.out).is_dir():
        raise ValueError(f"--out {a.out}: is a file; bench writes a folder of tables and a plot")
    report = run_bench(scene, data, names, device, a.size, Path(a.out) if a.out else None, a.views, a.timing_views,
                       a.repeats, a.precision, accel=a.accel,
                       on_progress=lambda m: None if a.quiet else print(m, file=sys.stderr))
    print(markdown_table(report))
    if a.out:
        print(f"wrote bench.md, bench.csv, bench.json and bench.png to {a.out}")
    return 0


def cmd_export(a) -> int:
    from models.scene import Scene

    scene = Scene.load(Path(a.scene))
    names = None if a.backends == "all" else [b.strip() for b in a.backends.split(",")]
    out = scene.export(Path(a.out), half=not a.fp32, backends=names, force=a.force)
    size = sum(p.stat().st_size for p in out.root.iterdir() if p.is_file())
    print(f"exported {', '.join(out.backends)} to {out.root} ({size / 2**20:.1f} MiB, "
          f"{'float32' if a.fp32 else 'float16'} weights)")
    return 0


def orbit_cameras(scene, ref, n: int):
    """Cameras circling the scene centre at the mean distance/elevation of the dataset cameras."""
    from models.cameras import Camera, look_at

    centre = torch.tensor(scene.aabb).mean(0)
    up = torch.tensor(scene.up, dtype=torch.float32)
    pos = torch.stack([c.c2w[:3, 3] for c in ref])
    rel = pos - centre
    radius = float(rel.norm(dim=-1).mean())
    height = float((rel @ up).mean())
    # orthonormal basis around up
    a = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0]))
    if a.norm() < 1e-3:
        a = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0]))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    ring = math.sqrt(max(radius**2 - height**2, 1e-6))
    c0 = ref[0]
    cams = []
    for i in range(n):
        th = 2 * math.pi * i / n
        eye = centre + up * height + ring * (math.cos(th) * a + math.sin(th) * b)
        cams.append(Camera(look_at(eye, centre, up), c0.width, c0.height, c0.fx, c0.fy, c0.cx, c0.cy))
    return cams


# ------------------------------------------------------------------------------------ parser
class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line ``error: ...`` and exit status 2."""

    def error(self, message: str):
        print(f"error: {self.prog.split()[-1] if ' ' in self.prog else self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {v}" if high is not None
                                             else f"must be an integer >= {low}, got {v}")
        return v

    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text}")
    return v


def device_name(text: str) -> str:
    """An argparse type: cuda, cuda:N, mps or cpu."""
    import re

    if not re.fullmatch(r"cuda(:\d+)?|mps|cpu", text):
        raise argparse.ArgumentTypeError(f"must be cuda, cuda:N, mps or cpu, got {text!r}")
    return text


def accel_paths(text: str) -> dict[str, str]:
    """An argparse type: BACKEND=PATH[,BACKEND=PATH], each path one of that backend's ``ACCEL_CHOICES``."""
    from models.backends.registry import parse_accel

    try:
        return parse_accel(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


POSITIVE = int_at_least(1)
IMAGE_SIZE = int_at_least(1, 16384)


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="override one scalar setting of the stage's preset (repeatable), e.g. --set lr=1e-3")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, type=device_name, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_accel(p: argparse.ArgumentParser) -> None:
    from models.backends.registry import BACKENDS

    paths = "; ".join(f"{n}: {'|'.join(cls.ACCEL_CHOICES)}" for n, cls in BACKENDS.items())
    p.add_argument("--accel", type=accel_paths, default=None, metavar="BACKEND=PATH[,BACKEND=PATH]",
                   help=f"execution path of a backend on CUDA, e.g. kilonerf=torch,r2l=fused ({paths}; default "
                   "auto: the fastest that works; backends this command does not render are ignored)")


def add_data_mismatch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-mismatch-ok", action="store_true",
                   help="use a dataset other than the one the scene was made from (other cameras or images)")


def add_events(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", default=None, metavar="FILE",
                   help="append the job's events (validation PSNR, losses, speed) to FILE as JSON lines")
    p.add_argument("--checkpoint-every", type=positive_seconds, default=None, metavar="S",
                   help="seconds between checkpoints (default: the preset's; a killed job loses at most this)")


def build_parser() -> argparse.ArgumentParser:
    from models.training.jobs import DISTILL_STAGES, STAGES

    ap = Parser(prog="main.py", description="Neural scene viewer: train, distil, evaluate and view "
                                 "NeRF / KiloNeRF / R2L scenes.")
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("view", help="open the viewer (default command; no SCENE: the bundled demo scene)")
    p.add_argument("scene", nargs="?", default=None)
    p.add_argument("--device", default=None, type=device_name, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--quit-after", type=positive_seconds, default=None, help="close after this many seconds (smoke tests)")
    p.add_argument("--screenshot", default=None, help="with --quit-after: save the GL canvas to this PNG first")
    p.add_argument("--render", choices=["process", "thread"], default="process",
                   help="where the backends render: a process of their own (default; the GUI's interpreter "
                   "stays free) or a thread of the GUI process")
    add_accel(p)

    p = sub.add_parser("make-scene", help="write the project's procedural scene as a Blender-format dataset")
    p.add_argument("out")
    p.add_argument("--size", type=int_at_least(8, 4096), default=64, help="image size in pixels (square, 8-4096)")
    p.add_argument("--views", default="40", help="train views, or train,val,test counts (default 40 -> 40,8,8)")

    p = sub.add_parser("train", help="fit the NeRF teacher of a dataset into a scene folder")
    p.add_argument("data", help="dataset folder (Blender, LLFF or transforms.json)")
    p.add_argument("--out", required=True, help="scene folder to write (resumes if it holds a checkpoint)")
    p.add_argument("--preset", default="standard", help="tiny | quick | standard | paper")
    p.add_argument("--steps", type=POSITIVE, default=None, help="override the preset's step count")
    p.add_argument("--half-res", action="store_true", help="Blender: train at half resolution")
    p.add_argument("--factor", type=POSITIVE, default=None, help="LLFF: image downsampling factor (images_N)")
    p.add_argument("--views", type=POSITIVE, default=None, help="sparse views: keep N training views (3/6/9)")
    p.add_argument("--sparse-reg", nargs="?", const="regnerf", default=None, choices=["regnerf", "freenerf", "both"],
                   help="sparse-view regularisation (needs --views): regnerf (the default: depth smoothness on "
                   "unobserved patches, sample-space annealing, gradient clipping), freenerf (frequency and "
                   "occlusion regularisation) or both")
    p.add_argument("--time-budget", type=positive_seconds, default=None, help="stop training after this many seconds")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay the training step as a CUDA graph (experimental; measured slower than eager)")
    p.add_argument("--samples-per-step", type=POSITIVE, default=None,
                   help="occupancy sampler: samples per step the ray batch adapts to (preset: 2^18)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    add_set(p)
    add_common(p)
    add_data_mismatch(p)
    add_events(p)

    p = sub.add_parser("distill", help="distil KiloNeRF or R2L from a scene's NeRF teacher")
    p.add_argument("scene")
    p.add_argument("--backend", required=True, choices=list(DISTILL_STAGES))
    p.add_argument("--preset", default="standard", help="tiny | quick | standard | paper")
    p.add_argument("--steps", type=POSITIVE, default=None, help="override the preset's step count")
    p.add_argument("--data", default=None, help="dataset folder (default: the one in scene.json)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--time-budget", type=positive_seconds, default=None, help="stop after this many seconds")
    p.add_argument("--variant", default=None,
                   help="r2l: student network (default: the preset's; e.g. W256D88, the paper's)")
    p.add_argument("--pseudo", default=None, choices=["online", "pool"],
                   help="r2l: fresh teacher rays every step (online) or a fixed pool of teacher images")
    p.add_argument("--teacher", default=None, choices=["auto", "kilonerf", "march", "backend"],
                   help="r2l: which renderer labels the pseudo rays (default auto: the fastest the scene has)")
    p.add_argument("--batch-rays", type=POSITIVE, default=None, help="r2l: rays per step (per process under torchrun)")
    add_set(p)
    add_common(p)
    add_data_mismatch(p)
    add_events(p)

    p = sub.add_parser(
        "pipeline", help="train the teacher, then distil students, as one resumable job (the viewer's training dialog)",
        description="Train the stages of --stages in order into the scene folder --out, as the viewer's training "
        "dialog does. The job is recorded in SCENE/checkpoints/training_job.json: rerunning the same command "
        "after an interruption (Ctrl-C, kill) skips the stages it completed and resumes the others from their "
        "checkpoints (a stage whose options changed since runs again, continuing from its checkpoint as train and "
        "distill do); --restart starts every stage over. The first Ctrl-C stops at the next step and writes a "
        "checkpoint there. A student (kilonerf, r2l) needs the teacher: in --stages, or already trained in --out.")
    p.add_argument("data", help="dataset folder (Blender, LLFF or transforms.json)")
    p.add_argument("--out", required=True, help="scene folder to write (new, or an existing scene to resume or to add "
                   "students to)")
    p.add_argument("--stages", default=",".join(STAGES), metavar="STAGE[,STAGE]",
                   help=f"the stages to run, in the order {','.join(STAGES)} (default: all of them)")
    p.add_argument("--preset", default="standard", help="tiny | quick | standard | paper (every stage)")
    p.add_argument("--set", action="append", default=None, metavar="STAGE.KEY=VALUE",
                   help="override one scalar setting of one stage's preset (repeatable); the stage must be one of "
                   "--stages, e.g. --set teacher.steps=2000 --set r2l.lr=1e-3")
    p.add_argument("--half-res", action="store_true", help="Blender: train at half resolution")
    p.add_argument("--factor", type=POSITIVE, default=None, help="LLFF: image downsampling factor (images_N)")
    p.add_argument("--restart", action="store_true", help="start every stage over (ignore the saved job and the "
                   "checkpoints)")
    add_common(p)
    add_data_mismatch(p)
    add_events(p)

    p = sub.add_parser("eval", help="PSNR/SSIM per view and mean")
    p.add_argument("scene")
    p.add_argument("--backend", default="nerf", help="nerf | kilonerf | r2l | all | comma list")
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--size", type=IMAGE_SIZE, default=None, help="render with the longest side this many pixels")
    p.add_argument("--max-views", type=POSITIVE, default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    add_accel(p)
    p.add_argument("--data", default=None, help="dataset folder (default: the one in scene.json)")
    add_common(p)
    add_data_mismatch(p)

    p = sub.add_parser("render", help="render a video (mp4/gif) or PNG frames")
    p.add_argument("scene")
    p.add_argument("--backend", default="nerf")
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif or a folder for PNGs")
    p.add_argument("--path", default="orbit", choices=["orbit", "test"])
    p.add_argument("--size", type=IMAGE_SIZE, default=None)
    p.add_argument("--frames", type=int_at_least(1, 100000), default=60, help="orbit frames")
    p.add_argument("--views", default=None, help="only these camera indices of the path, e.g. 0,8")
    p.add_argument("--output", default="rgb", choices=["rgb", "depth", "acc"], help="what to write (depth and "
                   "opacity colour-mapped)")
    p.add_argument("--fps", type=int_at_least(1, 240), default=30)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    add_accel(p)
    add_common(p)

    p = sub.add_parser("export", help="copy a scene without checkpoints, weights as float16 (for sharing)")
    p.add_argument("scene")
    p.add_argument("--out", required=True)
    p.add_argument("--backends", default="all", help="all | comma list")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--force", action="store_true", help="replace a scene already at --out")

    p = sub.add_parser("doctor", help="check a scene or dataset folder and list everything wrong with it")
    p.add_argument("path")

    p = sub.add_parser("bench", help="quality and speed of every backend in one run (tables + plot)")
    p.add_argument("scene")
    p.add_argument("--backends", default="all", help="all | comma list")
    p.add_argument("--size", type=IMAGE_SIZE, default=None, help="timing resolution (longest side); default native")
    p.add_argument("--out", default=None, help="folder for bench.md/.csv/.json/.png")
    p.add_argument("--views", type=POSITIVE, default=None, help="test views for quality (default all)")
    p.add_argument("--timing-views", type=POSITIVE, default=5, help="test cameras timed")
    p.add_argument("--repeats", type=POSITIVE, default=3, help="timed renders of each timing camera")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    add_accel(p)
    p.add_argument("--data", default=None, help="dataset folder (default: the one in scene.json)")
    add_common(p)
    add_data_mismatch(p)
    return ap


COMMANDS = {
    "make-scene": cmd_make_scene,
    "train": cmd_train,
    "distill": cmd_distill,
    "pipeline": cmd_pipeline,
    "doctor": cmd_doctor,
    "eval": cmd_eval,
    "render": cmd_render,
    "bench": cmd_bench,
    "export": cmd_export,
}


def run(argv: list[str], parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    a = parser.parse_args(argv)
    try:
        return COMMANDS[a.command](a)
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is kept; run the same command to resume)", file=sys.stderr)
        return 130
    except known_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: one line on the terminal, the traceback in a log
        log = crash_log(e)
        print(f"error: unexpected {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
              f" (a bug; the traceback is in {log})", file=sys.stderr)
        return 1


def crash_log(e: BaseException) -> str:
    """Write the traceback of ``e`` to a log file (``$NSV_LOG_DIR``, else the temp folder); its path."""
    import os
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("NSV_LOG_DIR") or tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"nsv-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"{' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        return str(path)
    except OSError:
        traceback.print_exception(type(e), e, e.__traceback__)
        return "(no log could be written: printed above)"
