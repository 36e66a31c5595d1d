"""Benchmark the GUI's responsiveness while a job trains from the training dialog.

    python benchmarks/bench_training.py [--steps 300] [--preset tiny] [--size 256] [--load 1] [--runs 1]
        [--render process|thread]
        [--device cpu] [--dataset DIR] [--stacks MS]

Opens the real main window (``--size``: the GL view, square), starts a teacher job from the
training dialog exactly as a user does (on ``--dataset``, by default a procedural 64x64 dataset
written to a temporary folder), and measures the event loop with a 5 ms QTimer on the GUI thread
until the job finishes: every gap between ticks beyond the timer's period is a stall. While the
job trains the viewer shows its live preview (weight snapshots every 0.5 s). ``--load N`` runs N
CPU-bound processes beside it for the whole measurement (another job on the same machine).

Prints one row per run: steps, seconds, ticks, the worst stall and the GUI thread's own CPU time
within it (the rest of the stall it waited for a core), the 99th percentile of the gaps, how many
stalls exceeded 50 ms (and their mean GUI CPU time) and 100 ms, preview frames shown, and the load
average. ``--stacks MS`` also prints the GUI thread's Python stack during the longest stalls. Needs a
display (Xvfb works: ``xvfb-run -a python benchmarks/bench_training.py``).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PyQt6.QtCore import QSettings  # noqa: E402

from viewer.eventloop import StallMeter  # noqa: E402
from viewer.eventloop import spin as _spin  # noqa: E402


def _burn(stop) -> None:  # a CPU-bound process beside the viewer
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def one_run(win, dataset: Path, out: Path, steps: int, preset: str, device: str, stacks_ms: float) -> dict:
    ctrl = win.training
    dlg = ctrl.new_training()
    dlg.dataset_edit.setText(str(dataset))
    dlg.check_dataset()
    dlg.output_edit.setText(str(out))
    dlg.check_output()
    dlg.preset.setCurrentIndex(dlg.preset.findData(preset))
    dlg.stage_steps["teacher"].setValue(steps)
    dlg.snapshot_every.setValue(0.5)
    dlg.device.setCurrentIndex(dlg.device.findData(device))
    frames = []
    win.worker.frameReady.connect(frames.append)
    meter = StallMeter(sample_stacks_ms=stacks_ms)
    t0 = time.perf_counter()
    meter.start()
    dlg.start_button.click()
    s = ctrl.session
    while s is not None and s.outcome is None:
        _spin(20)
    meter.stop()
    seconds = time.perf_counter() - t0
    win.worker.frameReady.disconnect(frames.append)
    gaps = sorted(meter.gaps)
    ms = [1000.0 * g for g in gaps]
    worst_wall, worst_cpu = meter.worst
    busy = [c for g, c in zip(meter.gaps, meter.cpu) if g > 0.05]
    return {
        "outcome": s.outcome if s is not None else "not started", "steps": steps, "seconds": seconds,
        "ticks": len(ms), "worst_ms": ms[-1] if ms else float("nan"),
        "p99_ms": ms[int(0.99 * (len(ms) - 1))] if ms else float("nan"),
        "worst_cpu_ms": 1000.0 * worst_cpu, "over_50_cpu_ms": 1000.0 * sum(busy) / max(len(busy), 1),
        "stacks": meter.stacks,
        "over_50": sum(m > 50 for m in ms), "over_100": sum(m > 100 for m in ms),
        "preview_frames": sum(1 for f in frames if f.backends == ("nerf",)), "load": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="teacher steps of each run")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", type=int, default=256, help="GL view size in pixels (square)")
    p.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside the viewer")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--render", choices=["process", "thread"], default="process",
                   help="the viewer's backends in a render process (its default) or on a thread of the GUI process")
    p.add_argument("--stacks", type=float, default=0.0, metavar="MS",
                   help="print the GUI thread's Python stack during the longest stalls over MS milliseconds")
    p.add_argument("--dataset", default=None, help="dataset folder (default: a procedural 64x64 one)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.runs < 1 or args.load < 0 or args.size < 16:
        print("error: --steps and --runs must be >= 1, --load >= 0, --size >= 16", file=sys.stderr)
        return 2

    from viewer.app import configure_torch_threads, create_application, freeze_startup_heap
    from viewer.main_window import MainWindow

    tmp = Path(tempfile.mkdtemp(prefix="nsv-bench-training-"))
    dataset = Path(args.dataset) if args.dataset else None
    if dataset is None:
        from models.data.procedural import ProceduralScene

        dataset = ProceduralScene().write_dataset(tmp / "data", size=64, views=(40, 8, 8))
    app = create_application([sys.argv[0]])
    configure_torch_threads(args.device)
    settings = QSettings(str(tmp / "bench.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, device=args.device, render_process=args.render == "process")
    win.training.ask_stop = lambda: True
    win.canvas.setFixedSize(args.size, args.size)
    win.show()
    _spin(300)
    freeze_startup_heap()

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    rows = []
    try:
        for i in range(args.runs):
            rows.append(one_run(win, dataset, tmp / f"scene{i}", args.steps, args.preset, args.device,
                                args.stacks))
            gc.collect()
    finally:
        stop.set()
        for b in burners:
            b.join(5)
        win.training.shutdown()
        win.close()
        app.processEvents()
    print(f"{os.cpu_count()} CPUs; {args.load} CPU-bound process(es) beside; view {args.size}x{args.size}; "
          f"rendering in {'a render process' if args.render == 'process' else 'a thread of the GUI process'}; "
          f"teacher preset {args.preset}, {args.steps} steps on {args.device}")
    print("GUI CPU: the GUI thread's own CPU time within the stall (the rest it waited for a core)")
    print("| run | outcome | seconds | ticks | worst stall ms | its GUI CPU ms | p99 gap ms | stalls > 50 ms "
          "| their mean GUI CPU ms | > 100 ms | preview frames | load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        print(f"| {i + 1} | {r['outcome']} | {r['seconds']:.1f} | {r['ticks']} | {r['worst_ms']:.1f} | "
              f"{r['worst_cpu_ms']:.1f} | {r['p99_ms']:.1f} | {r['over_50']} | {r['over_50_cpu_ms']:.1f} | "
              f"{r['over_100']} | {r['preview_frames']} | {r['load']:.1f} |")
    for i, r in enumerate(rows):
        for gap, stack in r["stacks"]:
            print(f"\nrun {i + 1}: stall of {1000 * gap:.1f} ms; the GUI thread was in:\n{stack}")
    return 0 if all(r["outcome"] == "finished" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
