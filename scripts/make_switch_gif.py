"""An animated GIF of switching backends (keys 2, 3, 1, 2) in the real viewer window on the demo scene.

    xvfb-run -a -s "-screen 0 1280x1000x24" .venv/bin/python scripts/make_switch_gif.py \\
        [--out docs/images/switch_backends.gif] [--scale 0.7] [--nerf-wait 90]

Drives the real ``MainWindow`` (1060x640, CPU) on ``assets/demo_scene``: KiloNeRF (the demo's
default) while the camera is dragged, then key 3 (R2L) and a drag, key 1 (NeRF), key 2 (back to
KiloNeRF). Keys go through ``QTest.keyClick`` on the GL view, the same path as a real key press
(the window's shortcuts); frames are ``QWidget.grab()`` of the whole window every ~150 ms of wall
time, so the GIF plays in real time. The one exception is NeRF: on a CPU its first frame takes
seconds (the full 8x256 teacher, 192 samples per ray), so that part is a time-lapse (one GIF frame
per 2 s of waiting, each shown 200 ms) and the caption says how long it really took. A caption
bar under each frame names the key and the backend.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from PyQt6.QtCore import QPoint, QSettings, Qt, QTimer  # noqa: E402
from PyQt6.QtGui import QImage  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402

from viewer.app import configure_torch_threads, create_application  # noqa: E402
from viewer.eventloop import spin as _spin  # noqa: E402
from viewer.eventloop import wait_until as _wait  # noqa: E402
from viewer.main_window import DEMO_SCENE, MainWindow  # noqa: E402

WINDOW = (1060, 640)
PERIOD_MS = 150
KEYS = {"nerf": Qt.Key.Key_1, "kilonerf": Qt.Key.Key_2, "r2l": Qt.Key.Key_3}


def _font(size: int):
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default()


class Recorder:
    """Frames of the window (downscaled, with a caption bar) and how long each is shown."""

    def __init__(self, win: MainWindow, scale: float):
        self.win = win
        self.scale = scale
        self.frames: list[Image.Image] = []
        self.durations: list[int] = []
        self.caption = ""
        self.font = _font(max(12, int(22 * scale)))

    def grab(self, duration_ms: int) -> None:
        img = self.win.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        w, h = img.width(), img.height()
        arr = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8)
        arr = arr.reshape(h, img.bytesPerLine())[:, : w * 3].reshape(h, w, 3)
        im = Image.fromarray(arr.copy()).resize((round(w * self.scale), round(h * self.scale)), Image.LANCZOS)
        bar = max(20, int(34 * self.scale))
        out = Image.new("RGB", (im.width, im.height + bar), (32, 32, 32))
        out.paste(im, (0, 0))
        ImageDraw.Draw(out).text((8, im.height + (bar - self.font.size) // 2 - 1), self.caption,
                                 fill=(255, 255, 255), font=self.font)
        self.frames.append(out)
        self.durations.append(int(duration_ms))

    def record(self, seconds: float, during=None) -> None:
        """Grab every PERIOD_MS for ``seconds`` (real time); ``during`` is called before each grab."""
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            if during is not None:
                during()
            self.grab(PERIOD_MS)
            _spin(max(1.0, PERIOD_MS - (time.perf_counter() - t0) * 1000.0))

    def save(self, path: Path) -> None:
        pal = [f.quantize(colors=192, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for f in self.frames]
        pal[0].save(path, save_all=True, append_images=pal[1:], duration=self.durations, loop=0, optimize=True,
                    disposal=1)


class Drag:
    """A left-button drag on the GL view, moved by hand (one step per call)."""

    def __init__(self, win: MainWindow, step: int = 6):
        self.canvas = win.canvas
        self.centre = QPoint(self.canvas.width() // 2, self.canvas.height() // 2)
        self.x = self.centre.x()
        self.step = step
        self.timer = QTimer()
        self.timer.setInterval(16)  # 60 Hz mouse moves between grabs
        self.timer.timeout.connect(self.move)

    def start(self) -> None:
        QTest.mousePress(self.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, self.centre)
        self.timer.start()

    def move(self) -> None:
        self.x += self.step / 4
        QTest.mouseMove(self.canvas, QPoint(int(self.x), self.centre.y()))

    def stop(self) -> None:
        self.timer.stop()
        QTest.mouseRelease(self.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                           QPoint(int(self.x), self.centre.y()))


def press(win: MainWindow, name: str) -> None:
    QTest.keyClick(win.canvas, KEYS[name])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "switch_backends.gif"))
    p.add_argument("--scale", type=float, default=0.7, help="GIF size relative to the 1060x640 window")
    p.add_argument("--nerf-wait", type=float, default=90.0, help="max seconds to wait for NeRF's first frame")
    args = p.parse_args(argv)

    app = create_application([sys.argv[0]])
    configure_torch_threads("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="nsv-gif-"))
    win = MainWindow(settings=QSettings(str(tmp / "viewer.ini"), QSettings.Format.IniFormat), device="cpu")
    win.resize(*WINDOW)
    win.show()
    win.activateWindow()
    _spin(300)
    if not win.open_scene(DEMO_SCENE):
        print(win.banner.text(), file=sys.stderr)
        return 1
    names = [n for n in KEYS if win.backend_selector.is_enabled(n)]
    if not _wait(lambda: set(names) <= set(win.infos), 300):
        print(f"backends did not load: {sorted(set(names) - set(win.infos))}", file=sys.stderr)
        return 1
    _wait(lambda: win.last_frame is not None and win.last_frame.final, 120)
    rec = Recorder(win, args.scale)

    # KiloNeRF (the demo's default on a CPU), dragged, then released (refines)
    rec.caption = "2: KiloNeRF (drag)"
    drag = Drag(win)
    drag.start()
    rec.record(2.5)
    drag.stop()
    rec.caption = "2: KiloNeRF (released: refines to full resolution)"
    rec.record(1.5)

    # key 3: R2L
    press(win, "r2l")
    rec.caption = "3: R2L"
    rec.record(1.5)
    drag = Drag(win, step=-6)
    drag.start()
    rec.caption = "3: R2L (drag)"
    rec.record(2.0)
    drag.stop()
    rec.caption = "3: R2L (released)"
    rec.record(1.0)

    # key 1: NeRF, a time-lapse while its first CPU frame renders
    t0 = time.perf_counter()
    press(win, "nerf")
    first = None
    while time.perf_counter() - t0 < args.nerf_wait:
        f = win.last_frame
        if f is not None and f.backends == ("nerf",):
            first = time.perf_counter() - t0
            break
        rec.caption = f"1: NeRF (CPU, time-lapse): waiting for its first frame, {time.perf_counter() - t0:.0f} s"
        rec.grab(200)
        _spin(2000)
    if first is not None:
        f = win.last_frame
        rec.caption = f"1: NeRF (CPU): first frame after {first:.1f} s, at {f.width}x{f.height}"
        rec.record(2.0)
    else:
        rec.caption = f"1: NeRF (CPU): no frame within {args.nerf_wait:.0f} s"
        rec.record(1.0)

    # key 2: back to KiloNeRF
    t1 = time.perf_counter()
    press(win, "kilonerf")
    rec.caption = "2: KiloNeRF"
    rec.record(2.0)
    back = time.perf_counter() - t1

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec.save(out)
    total = sum(rec.durations) / 1000.0
    print(f"wrote {out}: {len(rec.frames)} frames, {rec.frames[0].width}x{rec.frames[0].height}, "
          f"{total:.1f} s, {out.stat().st_size / 1e6:.2f} MB; NeRF first frame "
          f"{'none' if first is None else f'{first:.1f} s'}; back to KiloNeRF recorded {back:.1f} s")
    win.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
