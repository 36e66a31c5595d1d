"""Benchmark the real viewer window: frame rate while dragging, per backend, and the viewer's own
overhead per frame.

    python benchmarks/bench_viewer.py SCENE --size 800 --seconds 10 [--backends nerf,kilonerf] [--target-fps 30]
        [--null-backend] [--full-resolution] [--render process|thread]

Opens the main window with an ``size x size`` GL view (``--size 0``: the window at its default
size, as ``python main.py`` opens it on this screen), and for each available backend scripts a
left-button drag (mouse moves at 120 Hz through Qt's event queue, like a real mouse) for
``seconds``, then releases and waits for the still view to refine to full resolution. Prints one
row per backend:

- FPS while dragging: interactive frames painted per second.
- render res: mean dynamic render resolution while dragging (the window is size x size).
- backend ms: mean ``RenderResult.elapsed_ms`` of those frames (the backend's own time).
- overhead ms: the viewer's work per frame on top of the backend: worker-side bookkeeping
  (request scaling, tensor -> numpy, dynamic-resolution update) + texture upload (glFinish-
  synchronised, so driver work is included). Mean and 95th percentile; both parts also on their own.
- draw ms: drawing the window-sized quad (shader, colour map), glFinish-synchronised. Shown apart
  because it is the GL implementation's cost: software rasterisation under Xvfb/llvmpipe
  (milliseconds at 800x800), microseconds on a GPU; the GL renderer is printed above the table.
- latency ms: from the worker emitting a frame to the end of its paint (queueing in the GUI
  event loop; not a per-frame cost, it overlaps the next render).
- GUI ms/move: GUI-thread time per mouse move (camera update + request + submit).
- refine s: time from releasing the mouse to the final full-resolution frame (capped by --refine-timeout).

``--null-backend`` adds a backend that only generates rays and colours them by direction (no
network), so the dynamic resolution reaches full size and the viewer's overhead is measured on
full-resolution frames.

Works under Xvfb/llvmpipe on CPU and on a GPU machine with a display (or Xvfb). Under llvmpipe
"draw" is software rasterisation of the window-sized quad (a few ms at 800x800); on a GPU it is
microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PyQt6.QtCore import QPoint, QSettings, Qt, QTimer  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402

from models.backends import registry  # noqa: E402
from models.backends.null import NullBackend  # noqa: E402
from viewer.app import configure_torch_threads, create_application  # noqa: E402
from viewer.eventloop import spin as _spin  # noqa: E402
from viewer.eventloop import wait_until as _wait  # noqa: E402
from viewer.main_window import MainWindow  # noqa: E402


@dataclass(frozen=True)
class FrameStats:
    """What the table needs of a painted frame."""

    width: int
    height: int
    render_ms: float
    frame_ms: float
    refining: bool
    emitted_at: float


def bench_backend(win: MainWindow, name: str, seconds: float, move_hz: float, refine_timeout: float) -> dict:
    canvas = win.canvas
    if not win.set_backend(name):
        return {"backend": name, "error": win.backend_selector.reasons.get(name, "unavailable")}
    if not _wait(lambda: name in win.infos, 600):
        return {"backend": name, "error": "did not load"}
    # settle: first frames so the dynamic resolution has a measurement
    win.camera.reset()
    win.request_render()
    _wait(lambda: win.last_frame is not None and win.last_frame.backends == (name,), 300)

    painted: list[tuple[float, FrameStats, float, float]] = []

    def on_paint(frame):
        # the figures only: a Frame holds its images, and holding every painted frame would keep every
        # frame's buffer alive (with the render process: a new shared buffer for each frame)
        painted.append((time.perf_counter(), FrameStats(frame.width, frame.height, frame.render_ms, frame.frame_ms,
                                                        frame.refining, frame.emitted_at),
                        canvas.upload_ms, canvas.draw_ms))

    canvas.framePainted.connect(on_paint)
    gui_ms: list[float] = []
    original = win.request_render

    def timed_request():
        t0 = time.perf_counter()
        original()
        gui_ms.append((time.perf_counter() - t0) * 1000.0)

    canvas.viewChanged.disconnect(original)
    canvas.viewChanged.connect(timed_request)

    centre = QPoint(canvas.width() // 2, canvas.height() // 2)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    state = {"i": 0}

    def move():
        state["i"] += 1
        x = centre.x() + int(80 * np.sin(state["i"] * 0.05))
        y = centre.y() + int(20 * np.sin(state["i"] * 0.031))
        QTest.mouseMove(canvas, QPoint(x, y))

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(max(1, int(1000 / move_hz)))
    timer.timeout.connect(move)
    t0 = time.perf_counter()
    timer.start()
    _spin(seconds * 1000)
    timer.stop()
    t1 = time.perf_counter()
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    refined = _wait(lambda: win.last_frame is not None and win.last_frame.final
                    and win.last_frame.request == win.current_request(), refine_timeout)
    refine_s = time.perf_counter() - t1
    canvas.framePainted.disconnect(on_paint)
    canvas.viewChanged.disconnect(timed_request)
    canvas.viewChanged.connect(original)

    moving = [(t, f, up, dr) for t, f, up, dr in painted if t0 <= t <= t1 and not f.refining]
    if not moving:
        late = [(t, f) for t, f, _, _ in painted if t > t1 and not f.refining]
        why = (f"; the drag's first frame ({late[0][1].width}x{late[0][1].height}, {late[0][1].render_ms:.0f} ms "
               f"in the backend) was painted {late[0][0] - t0:.1f} s after the drag began" if late else
               f"; none within {refine_timeout:.0f} s after the drag either")
        return {"backend": name, "error": f"no frame painted during the {t1 - t0:.0f} s drag{why}"}
    overhead = [max(f.frame_ms - f.render_ms, 0.0) + up for _, f, up, _ in moving]
    info = win.infos[name]
    return {
        "backend": name,
        "label": info.label,
        "device": info.device,
        "fps": len(moving) / (t1 - t0),
        "res": f"{statistics.mean(f.width for _, f, _, _ in moving):.0f}x"
               f"{statistics.mean(f.height for _, f, _, _ in moving):.0f}",
        "backend_ms": statistics.mean(f.render_ms for _, f, _, _ in moving),
        "worker_ms": statistics.mean(max(f.frame_ms - f.render_ms, 0.0) for _, f, _, _ in moving),
        "upload_ms": statistics.mean(up for _, _, up, _ in moving),
        "draw_ms": statistics.mean(dr for _, _, _, dr in moving),
        "overhead_ms": statistics.mean(overhead),
        "overhead_p95": float(np.percentile(overhead, 95)),
        "latency_ms": statistics.mean((t - f.emitted_at) * 1000.0 for t, f, _, _ in moving),
        "gui_ms": statistics.mean(gui_ms) if gui_ms else 0.0,
        "moves": len(gui_ms),
        "frames": len(moving),
        "refine_s": refine_s if refined else float("nan"),
    }


def format_table(rows: list[dict], size: int | tuple[int, int], gl_renderer: str = "") -> str:
    head = (f"{'backend':<10} {'device':<24} {'FPS drag':>8} {'render res':>10} {'backend ms':>10} "
            f"{'overhead ms':>11} {'p95':>6} {'worker':>6} {'upload':>6} {'draw':>6} {'latency':>7} "
            f"{'GUI/move':>8} {'refine s':>8}")
    w, h = size if isinstance(size, tuple) else (size, size)
    lines = [f"viewer benchmark, GL view {w}x{h}, GL: {gl_renderer}", head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<10} skipped: {r['error']}")
            continue
        lines.append(
            f"{r['label']:<10} {r['device'][:24]:<24} {r['fps']:8.1f} {r['res']:>10} {r['backend_ms']:10.1f} "
            f"{r['overhead_ms']:11.2f} {r['overhead_p95']:6.2f} {r['worker_ms']:6.2f} {r['upload_ms']:6.2f} "
            f"{r['draw_ms']:6.2f} {r['latency_ms']:7.1f} {r['gui_ms']:8.2f} {r['refine_s']:8.1f}")
    lines.append("overhead = worker bookkeeping + texture upload per frame (glFinish-synchronised); draw = GL "
                 "quad draw (software under llvmpipe); latency = emit -> painted (queueing, overlaps rendering)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scene", help="scene folder")
    p.add_argument("--size", type=int, default=800,
                   help="GL view size in pixels (square); 0: the window's default size on this screen")
    p.add_argument("--seconds", type=float, default=10.0, help="drag duration per backend")
    p.add_argument("--backends", default="", help="comma-separated backend names (default: all available)")
    p.add_argument("--target-fps", type=float, default=30.0)
    p.add_argument("--move-hz", type=float, default=120.0, help="mouse move events per second")
    p.add_argument("--device", default=None, help="cuda / cpu / mps (default: best available)")
    p.add_argument("--refine-timeout", type=float, default=30.0, help="max seconds to wait for full resolution")
    p.add_argument("--null-backend", action="store_true",
                   help="also bench a network-free backend (viewer overhead at full resolution)")
    p.add_argument("--render", choices=["process", "thread"], default="process",
                   help="backends in a render process (the viewer's default) or on a thread of the GUI process")
    p.add_argument("--full-resolution", action="store_true",
                   help="turn dynamic resolution off: every frame at size x size (overhead at full size)")
    args = p.parse_args(argv)
    if args.null_backend:
        registry.BACKENDS = {**registry.BACKENDS, NullBackend.name: NullBackend}

    app = create_application([sys.argv[0]])
    configure_torch_threads(args.device)
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "bench.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, device=args.device, render_process=args.render == "process",
                     extra_backends={NullBackend.name: "models.backends.null:NullBackend"} if args.null_backend else None)
    if args.size > 0:
        win.canvas.setFixedSize(args.size, args.size)
    win.canvas.sync_timing = True
    win.set_target_fps(args.target_fps)
    if args.full_resolution:
        win.set_dynamic_resolution(False)
    win.show()
    win.activateWindow()
    _spin(200)
    if not win.open_scene(args.scene):
        print(win.banner.text(), file=sys.stderr)
        return 1
    size = win.canvas.render_size()
    names = [n for n in args.backends.split(",") if n] or [n for n in registry.BACKENDS
                                                           if win.backend_selector.is_enabled(n)]
    rows = [bench_backend(win, n, args.seconds, args.move_hz, args.refine_timeout) for n in names]
    print(f"rendering in {'a render process' if args.render == 'process' else 'a thread of the GUI process'}")
    print(format_table(rows, tuple(size), win.canvas.gl_renderer))
    win.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
