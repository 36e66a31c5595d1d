"""Benchmark: quality and speed of every backend of a scene, measured in one run.

Quality: mean PSNR/SSIM over the dataset's test views at their native resolution (the same
``models.evaluation.evaluate`` that ``eval`` uses, so the numbers agree). Speed: each test camera
rendered at ``size`` pixels (longest side) after warm-up, device synchronised, several repeats;
median and p95 ms/frame, FPS from the median, samples and FLOPs per ray, parameters, peak memory.
Writes ``bench.md`` (Markdown table), ``bench.csv``, ``bench.json`` and ``bench.png`` (speed vs
quality) into ``out``. The viewer's benchmark button runs the same ``run_bench`` on a thread,
with ``on_fraction`` for its progress bar and ``should_cancel`` for its Cancel button.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from models import devices
from models.backends.base import RenderRequest, RendererBackend
from models.evaluation import evaluate, split_cameras
from models.storage import write_json


class BenchCancelled(Exception):
    """``should_cancel()`` returned True (raised between renders)."""


def time_backend(
    backend: RendererBackend,
    cameras: list,
    near: float,
    far: float,
    background,
    size: int | None,
    repeats: int = 3,
    warmup: int = 2,
    precision: str = "auto",
    on_frame: Callable[[], None] = lambda: None,
) -> dict:
    """Median/p95 ms per frame over ``cameras`` x ``repeats`` renders (after ``warmup`` frames).

    ``on_frame`` is called after every render, warm-up included (progress; it may raise to stop).
    """
    reqs = []
    for cam in cameras:
        if size is not None:
            s = size / max(cam.width, cam.height)
            cam = cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        reqs.append(RenderRequest.from_camera(cam, near, far, background=tuple(background), precision=precision))
    dev = backend.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup):
        backend.render(reqs[i % len(reqs)])
        on_frame()
    times, spr, fpr = [], [], []
    for _ in range(repeats):
        for r in reqs:
            devices.sync(dev)
            t0 = time.perf_counter()
            res = backend.render(r)  # synchronises the device before returning
            times.append((time.perf_counter() - t0) * 1000.0)
            spr.append(res.samples_per_ray)
            fpr.append(res.flops_per_ray)
            on_frame()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    med = statistics.median(times)
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return {
        "ms_median": med,
        "ms_p95": p95,
        "ms_mean": sum(times) / len(times),
        "fps": 1000.0 / med,
        "samples_per_ray": sum(spr) / len(spr),
        "flops_per_ray": sum(fpr) / len(fpr),
        "width": reqs[0].width,
        "height": reqs[0].height,
        "frames_timed": len(times),
        "peak_memory_mib": mem,
    }


def run_bench(
    scene,
    data,
    backend_names: list[str],
    device: torch.device,
    size: int | None,
    out: Path | None,
    views: int | None = None,
    timing_views: int = 5,
    repeats: int = 3,
    precision: str = "auto",
    load: Callable[[str], RendererBackend] | None = None,
    on_progress: Callable[[str], None] = lambda msg: None,
    on_fraction: Callable[[float], None] = lambda f: None,
    should_cancel: Callable[[], bool] = lambda: False,
    warmup: int = 2,
    accel: dict[str, str] | None = None,
) -> dict:
    """Benchmark ``backend_names`` on the scene's test split; returns the report dict.

    ``accel``: backend name -> execution path it is created with (others: "auto"; not used with
    ``load``, which creates the backends itself). Each row records the path asked for (``accel``)
    and the one that rendered (``path``).

    ``on_fraction`` gets the fraction of renders done (0..1) after each render;
    ``should_cancel`` is polled between renders and raises BenchCancelled.
    """
    from models.backends.registry import load_backend

    split = data.splits.get("test") or data.splits.get("val")
    if split is None:
        raise ValueError(f"{data.root}: the dataset has no test or val split to benchmark on")
    cams = split_cameras(split)[: max(1, timing_views)]
    n_quality = len(split) if views is None else min(views, len(split))
    per_backend = n_quality + warmup + repeats * len(cams)
    total = max(1, per_backend * len(backend_names))
    done = [0]

    def step(*_args) -> None:
        done[0] += 1
        on_fraction(min(1.0, done[0] / total))
        if should_cancel():
            raise BenchCancelled("benchmark cancelled")

    rows = []
    for name in backend_names:
        if should_cancel():
            raise BenchCancelled("benchmark cancelled")
        on_progress(f"loading {name}")
        backend = load(name) if load else load_backend(scene, name, device, (accel or {}).get(name, "auto"))
        on_progress(f"{name}: quality on {n_quality} test views")
        q = evaluate(backend, split, data.near, data.far, data.background, None, views, precision, on_view=step)
        on_progress(f"{name}: timing at {size or 'native'} px")
        t = time_backend(backend, cams, data.near, data.far, data.background, size, repeats, warmup, precision,
                         on_frame=step)
        rows.append({"backend": name, "label": type(backend).label, "psnr": q["psnr"], "ssim": q["ssim"],
                     "quality_views": q["n_views"], "quality_size": f"{q['width']}x{q['height']}",
                     "params": backend.parameter_count(), "accel": backend.accel, "path": backend.active_path(),
                     "train_seconds": training_seconds(scene, name), **t})
        r = rows[-1]
        r["tflops"] = r["flops_per_ray"] * r["width"] * r["height"] / (r["ms_median"] / 1e3) / 1e12
        del backend
        if device.type == "cuda":
            torch.cuda.empty_cache()
    peak = devices.gemm_peak_tflops(device)
    for r in rows:
        r["of_peak"] = r["tflops"] / peak if peak else None
    base = next((r for r in rows if r["backend"] == "nerf"), None)
    for r in rows:
        r["speedup_vs_nerf"] = base["ms_median"] / r["ms_median"] if base else float("nan")
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "device": devices.describe(device),
        "host": platform.node(),
        "torch": torch.__version__,
        "precision": precision,
        "gemm_peak_tflops": peak,
        "scene": str(scene.root),
        "rows": rows,
    }
    if out is not None:
        write_report(report, Path(out))
    return report


def training_seconds(scene, name: str) -> float | None:
    """Seconds the scene's ``name`` backend trained for (the sum of its jobs' ``train_seconds``:
    the teacher's own fit, or a student's distillation without the teacher's), None if unrecorded."""
    entry = getattr(scene, "backends", {}).get(name, {}) if scene is not None else {}
    found = [float(m["train_seconds"]) for m in (entry.get("metrics") or {}).values()
             if isinstance(m, dict) and isinstance(m.get("train_seconds"), (int, float))]
    return sum(found) if found else None


def _num(value, spec: str, suffix: str = "") -> str:
    """``value`` formatted, or an en dash when it is missing or NaN (no GPU memory on CPU...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def markdown_table(report: dict) -> str:
    rows = report["rows"]
    w, h = (rows[0]["width"], rows[0]["height"]) if rows else (0, 0)
    lines = [
        f"Device: {report['device']}; torch {report['torch']}; date {report['date']}; precision {report['precision']}; "
        f"timing at {w}x{h}; quality at {rows[0]['quality_size'] if rows else '-'} "
        f"over {rows[0]['quality_views'] if rows else 0} test views. TFLOP/s: the backend's FLOPs per ray over the "
        "median frame time" + (f"; of peak: against the dense bf16 GEMM rate measured in this run, "
                               f"{report['gemm_peak_tflops']:.0f} TFLOP/s." if report.get("gemm_peak_tflops") else "."),
        "",
        "| backend | PSNR | SSIM | ms/frame (median) | ms p95 | FPS | samples/ray | MFLOPs/ray | TFLOP/s | of peak | params | "
        "peak MiB | train s | speed-up vs NeRF |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['ms_median']:.1f} | {r['ms_p95']:.1f} | "
            f"{r['fps']:.1f} | {r['samples_per_ray']:.1f} | {r['flops_per_ray'] / 1e6:.2f} | "
            f"{_num(r.get('tflops'), '.2f')} | {_num(r.get('of_peak') and 100 * r['of_peak'], '.1f', ' %')} | "
            f"{r['params']:,} | {_num(r['peak_memory_mib'], '.0f')} | "
            f"{_num(r.get('train_seconds'), '.0f')} | {_num(r['speedup_vs_nerf'], '.1f', 'x')} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    """bench.md, bench.csv, bench.json and bench.png (speed vs quality), each written atomically."""
    from models.storage import _atomic_replace

    out.mkdir(parents=True, exist_ok=True)
    md = markdown_table(report)
    _atomic_replace(out / "bench.md", lambda tmp: Path(tmp).write_text(md))
    buf = io.StringIO()
    keys = list(report["rows"][0].keys()) if report["rows"] else []
    wr = csv.DictWriter(buf, fieldnames=keys)
    wr.writeheader()
    for r in report["rows"]:
        wr.writerow(r)
    _atomic_replace(out / "bench.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    write_json(out / "bench.json", _json_safe(report))
    plot_speed_quality(report, out / "bench.png")


def _json_safe(value):
    """NaN/inf become null so bench.json is strict JSON (any parser reads it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def plot_speed_quality(report: dict, path: Path) -> None:
    """Scatter of FPS (log x) against PSNR, one labelled point per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.storage import _atomic_replace

    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in report["rows"]:
        ax.scatter(r["fps"], r["psnr"], s=60)
        speedup = r.get("speedup_vs_nerf", float("nan"))
        note = f", {speedup:.1f}x vs NeRF" if r["backend"] != "nerf" and math.isfinite(speedup) else ""
        ax.annotate(f"{r['label']}\n{r['ms_median']:.1f} ms{note}", (r["fps"], r["psnr"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.35, y=0.2)
    ax.set_xlabel(f"frames per second at {report['rows'][0]['width']}x{report['rows'][0]['height']} (log)"
                  if report["rows"] else "FPS")
    ax.set_ylabel("PSNR on test views (dB)")
    ax.set_title(f"Speed vs quality — {report['device']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _atomic_replace(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
