"""The README/docs screenshots of the real viewer window on the bundled demo scene.

    xvfb-run -a -s "-screen 0 1280x1000x24" .venv/bin/python scripts/make_viewer_images.py \\
        [--out docs/images] [--data DIR] [--only viewer|compare]

- ``viewer.png``: the main window (1060x640) on ``assets/demo_scene`` with its default backend
  (KiloNeRF) and the HUD, after a 3 s scripted drag (so the HUD shows the frame rate while
  dragging) and the refinement to full resolution.
- ``guides.png``: the depth view with its colour bar and range, and the scene guides (dataset
  camera frustums, the scene's box) drawn over it, zoomed out from the first test view.
- ``camera_path.png``: the Camera path panel with four keyframes recorded around the scene.
- ``compare.png``: compare mode, KiloNeRF (A) | R2L (B) at the first test view, with PSNR/SSIM
  against the ground truth. The demo scene names no dataset (it is regenerated, deterministically,
  with ``python main.py make-scene DIR --size 200 --views 100,4,8``); ``--data`` points at such a
  folder, else it is written to a temporary folder first. The path is only set in memory.

Both are ``QWidget.grab()`` of the whole window (GL view, overlays, panels, status bar), the way
docs/images/training.png is made (tests/test_viewer_training_screenshot.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PyQt6.QtCore import QPoint, QSettings, Qt, QTimer  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402

from viewer.app import configure_torch_threads, create_application  # noqa: E402
from viewer.eventloop import spin as _spin  # noqa: E402
from viewer.eventloop import wait_until as _wait  # noqa: E402
from viewer.main_window import DEMO_SCENE, MainWindow  # noqa: E402

WINDOW = (1060, 640)


def new_window(tmp: Path) -> MainWindow:
    win = MainWindow(settings=QSettings(str(tmp / f"viewer-{time.monotonic_ns()}.ini"), QSettings.Format.IniFormat),
                     device="cpu")
    win.resize(*WINDOW)
    win.show()
    win.activateWindow()
    _spin(300)
    return win


def wait_final(win: MainWindow, timeout_s: float = 300.0) -> bool:
    return _wait(lambda: win.last_frame is not None and win.last_frame.final
                 and win.last_frame.request == win.current_request(), timeout_s)


def drag(win: MainWindow, seconds: float, amplitude: int = 60) -> None:
    """A left-button drag of ``seconds`` (mouse moves at 60 Hz through the event queue)."""
    canvas = win.canvas
    centre = QPoint(canvas.width() // 2, canvas.height() // 2)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    state = {"i": 0}

    def move():
        state["i"] += 1
        QTest.mouseMove(canvas, QPoint(centre.x() + int(amplitude * state["i"] / (seconds * 60)), centre.y()))

    timer = QTimer()
    timer.setInterval(16)
    timer.timeout.connect(move)
    timer.start()
    _spin(seconds * 1000)
    timer.stop()
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       QPoint(centre.x() + amplitude, centre.y()))


def _open_demo(tmp: Path):
    win = new_window(tmp)
    assert win.open_scene(DEMO_SCENE), win.banner.text()
    return win


def _grab(win, out: Path, settle_ms: int):
    """Let the window settle, save it as ``out``, return the pixmap."""
    _spin(settle_ms)
    pix = win.grab()
    assert pix.save(str(out)), out
    return pix


def make_viewer_png(out: Path, tmp: Path) -> None:
    win = _open_demo(tmp)
    backend = win.backend
    assert _wait(lambda: backend in win.infos, 120), "default backend did not load"
    assert wait_final(win), "no final frame"
    drag(win, 3.0)
    assert wait_final(win), "no final frame after the drag"
    pix = _grab(win, out, 500)
    f = win.last_frame
    print(f"wrote {out} ({pix.width()}x{pix.height()}): {backend}, {f.full_width}x{f.full_height}, "
          f"FPS EMA {win.fps_ema}, interactive {win.last_interactive.width}x{win.last_interactive.height}")
    win.close()
    win.shutdown()


def make_compare_png(out: Path, tmp: Path, data: Path) -> None:
    win = _open_demo(tmp)
    win.scene.dataset["path"] = str(data)  # in memory only: where the ground truth is
    assert _wait(lambda: {"kilonerf", "r2l"} <= set(win.infos), 300), "backends did not load"
    win.set_backend("kilonerf")
    win.snap_camera(1)  # the first test view (quality against the ground truth)
    cmp = win.comparator
    cmp.backend_b = "r2l"
    assert cmp.set_active(True)
    cmp.set_backend_b("r2l")
    assert wait_final(win), "no final frame"
    assert _wait(lambda: cmp.quality is not None and cmp.quality.reference == "gt", 300), cmp.status
    pix = _grab(win, out, 800)
    q = cmp.quality
    print(f"wrote {out} ({pix.width()}x{pix.height()}): {q.backends} {q.reference_label} "
          f"PSNR {q.psnr} SSIM {q.ssim}")
    win.close()
    win.shutdown()


def make_guides_png(out: Path, tmp: Path) -> None:
    """The depth view with its colour bar and range, the dataset cameras' frustums and the scene's
    box drawn over it (F), seen from further out than the first test view."""
    win = _open_demo(tmp)
    backend = win.backend
    assert _wait(lambda: backend in win.infos, 120), "default backend did not load"
    win.set_guides_visible(True)
    win.set_mode("depth")
    win.camera.distance *= 2.2
    win.request_render()
    assert wait_final(win), "no final frame"
    pix = _grab(win, out, 500)
    f = win.last_frame
    print(f"wrote {out} ({pix.width()}x{pix.height()}): {backend} depth {f.value_range}, guides on")
    win.set_guides_visible(False)
    win.set_mode("rgb")
    win.close()
    win.shutdown()


def make_camera_path_png(out: Path, tmp: Path) -> None:
    """The Camera path panel with four keyframes recorded around the scene (K after each orbit),
    one of them selected and shown in the view."""
    win = _open_demo(tmp)
    backend = win.backend
    assert _wait(lambda: backend in win.infos, 120), "default backend did not load"
    for i in range(4):
        if i:
            win.camera.orbit(140, -25 if i % 2 else 25)
        win.add_keyframe()
    win.camera_path.show_panel()
    win.camera_path.go_to(2)
    win.camera_path.panel.list.setCurrentRow(2)
    assert wait_final(win), "no final frame"
    pix = _grab(win, out, 500)
    print(f"wrote {out} ({pix.width()}x{pix.height()}): {len(win.keyframes)} keyframes")
    win.close()
    win.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for viewer.png and compare.png")
    p.add_argument("--data", default=None, help="the demo's procedural dataset (make-scene --size 200 --views 100,4,8)")
    p.add_argument("--only", choices=("viewer", "compare", "guides", "camera_path"), default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="nsv-images-"))
    app = create_application([sys.argv[0]])
    configure_torch_threads("cpu")
    if args.only in (None, "viewer"):
        make_viewer_png(out / "viewer.png", tmp)
    if args.only in (None, "guides"):
        make_guides_png(out / "guides.png", tmp)
    if args.only in (None, "camera_path"):
        make_camera_path_png(out / "camera_path.png", tmp)
    if args.only in (None, "compare"):
        data = Path(args.data) if args.data else tmp / "demo200"
        if not (data / "transforms_test.json").exists():
            subprocess.run([sys.executable, str(ROOT / "main.py"), "make-scene", str(data), "--size", "200",
                            "--views", "100,4,8"], check=True)
        make_compare_png(out / "compare.png", tmp, data)
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
