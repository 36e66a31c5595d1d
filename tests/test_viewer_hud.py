"""The HUD's and the status bar's text (viewer/hud.py), without Qt: plain frames and a stand-in
window whose widgets record what they are given."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from viewer.hud import (
    FrameRateMeter,
    HudPresenter,
    frame_state,
    hud_lines,
    no_backend_lines,
    resolution_status,
    shown_label,
)


@dataclass
class FakeFrame:
    """The fields of viewer.render_worker.Frame that the HUD reads."""

    width: int = 32
    height: int = 24
    full_width: int = 64
    full_height: int = 48
    backends: tuple[str, ...] = ("nerf",)
    render_ms: float = 12.34
    frame_ms: float = 15.0
    samples_per_ray: float = 64.0
    final: bool = False
    refining: bool = False
    progress: float = 1.0


def test_hud_module_needs_neither_qt_nor_torch():
    code = ("import sys, viewer.hud; bad = [m for m in ('PyQt6', 'torch') if m in sys.modules]; "
            "sys.exit(', '.join(bad) or None)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or done.stdout


def test_frame_rate_is_a_moving_average_that_skips_pauses():
    m = FrameRateMeter()
    m.tick(0.0)
    assert m.ema is None  # one frame: no rate yet
    m.tick(0.1)
    assert m.ema == pytest.approx(10.0)  # the first span's rate is taken as it is
    m.tick(0.15)
    assert m.ema == pytest.approx(10.0)  # a span shorter than 0.1 s: not finished yet
    m.tick(0.2)
    assert m.ema == pytest.approx(0.2 * 20.0 + 0.8 * 10.0)  # 2 frames in 0.1 s: 12.0
    m.tick(2.0)  # 1.8 s later: the camera stood still, the gap is not a frame time
    assert m.ema == pytest.approx(12.0) and m.last_t == 2.0
    m.tick(2.25)
    assert m.ema == pytest.approx(0.2 * 4.0 + 0.8 * 12.0)  # 10.4


def test_frames_painted_in_a_burst_count_at_their_real_rate():
    m = FrameRateMeter()
    # frames whose paints arrive in pairs 1 ms apart every 40 ms (the event loop was busy): 50 FPS, not ~1000
    times = [0.0]
    for i in range(1, 60):
        times += [0.04 * i - 0.001, 0.04 * i]
    for t in times:
        m.tick(t)
    assert m.ema == pytest.approx(50.0, rel=0.05)
    m2 = FrameRateMeter()
    m2.tick(5.0)
    m2.tick(5.0)  # two frames at the same instant: no rate from a zero-length span
    assert m2.ema is None


@pytest.mark.parametrize(("fields", "shown", "state"), [
    ({"backends": ("nerf",)}, ("kilonerf",), "waiting for its first frame"),
    ({}, ("nerf",), "moving"),
    ({"refining": True, "progress": 0.25, "frame_ms": 1234.0}, ("nerf",), "refining 25% (1.2 s)"),
    ({"final": True}, ("nerf",), "final"),
    ({"final": True, "refining": True, "frame_ms": 2500.0}, ("nerf",), "final (refined in 2.5 s)"),
    ({"backends": ("nerf", "r2l"), "final": True}, ("nerf", "r2l"), "final"),
])
def test_frame_state(fields, shown, state):
    assert frame_state(FakeFrame(**fields), shown) == state


def test_hud_lines_of_a_frame():
    lines = hud_lines("NeRF", ("nerf",), device="cpu", mode_label="RGB", window_size=(64, 48), frame=FakeFrame(),
                      fps_ema=29.96, target_fps=30.0, render_scale=0.5)
    assert lines == [
        ("Backend", "NeRF"),
        ("FPS (EMA)", " 30.0   target 30"),  # 5 characters wide, so the column does not jump
        ("ms/frame", "12.3 render, 15.0 total at 32x24"),
        ("Resolution", "32x24 of 64x48 (25%), 50% of window"),  # 32*24 / (64*48) = 25%
        ("State", "moving"),
        ("Samples/ray", "64"),
        ("Device", "cpu"),
        ("Display", "RGB"),
    ]


def test_hud_timings_come_from_the_last_interactive_frame():
    final = FakeFrame(width=64, height=48, render_ms=900.0, frame_ms=1000.0, final=True, refining=True)
    moving = FakeFrame(width=16, height=12, render_ms=5.0, frame_ms=7.5)
    lines = dict(hud_lines("NeRF", ("nerf",), device="cpu", mode_label="Depth", window_size=(64, 48), frame=final,
                           interactive=moving, target_fps=24.0))
    assert lines["ms/frame"] == "5.0 render, 7.5 total at 16x12"
    assert lines["Resolution"] == "64x48 of 64x48 (100%)"  # full render scale: no "% of window"
    assert lines["State"] == "final (refined in 1.0 s)"
    assert lines["FPS (EMA)"] == "  -     target 24"  # no rate measured yet
    assert lines["Display"] == "Depth"


def test_hud_lines_before_the_first_frame_and_while_loading():
    assert hud_lines("NeRF | KiloNeRF", ("nerf", "kilonerf"), device=None, mode_label="Opacity",
                     window_size=(640, 480)) == [
        ("Backend", "NeRF | KiloNeRF  (loading…)"),
        ("Resolution", "window 640x480"),
        ("Device", "-"),
        ("Display", "Opacity"),
    ]
    assert no_backend_lines((640, 480)) == [("Backend", "none"), ("Window", "640x480")]


def test_status_texts():
    assert resolution_status(FakeFrame()) == "32x24 / 64x48"
    assert shown_label(["NeRF"]) == "NeRF"
    assert shown_label(["NeRF", "KiloNeRF"]) == "NeRF | KiloNeRF"


class Recorder:
    """Stands in for a QLabel / HudOverlay: keeps what it was last given."""

    def __init__(self):
        self.lines = None
        self.text = None

    def set_lines(self, lines):
        self.lines = lines

    def setText(self, text):
        self.text = text


def _window(**state):
    win = SimpleNamespace(backend=None, compare_backend=None, mode="rgb", infos={}, last_frame=None,
                          render_scale=1.0, canvas=SimpleNamespace(render_size=lambda: (64, 48)),
                          worker=SimpleNamespace(target_fps=30.0), hud=Recorder(), status_res=Recorder(),
                          status_backend=Recorder())
    for k, v in state.items():
        setattr(win, k, v)
    return win


def _presenter(win):
    labels = {"nerf": "NeRF", "kilonerf": "KiloNeRF"}
    return HudPresenter(win, labels.__getitem__, {"rgb": "RGB", "depth": "Depth"})


def test_presenter_without_a_backend_leaves_the_status_bar_alone():
    win = _window()
    _presenter(win).update()
    assert win.hud.lines == no_backend_lines((64, 48))
    assert win.status_res.text is None and win.status_backend.text is None


def test_presenter_writes_hud_and_status_bar_in_compare_mode():
    frame = FakeFrame(backends=("nerf", "kilonerf"), final=True)
    win = _window(backend="nerf", compare_backend="kilonerf", mode="depth", last_frame=frame,
                  infos={"nerf": SimpleNamespace(device="cuda:0")})
    p = _presenter(win)
    p.frame_shown(frame)
    p.update()
    lines = dict(win.hud.lines)
    assert lines["Backend"] == "NeRF | KiloNeRF"
    assert lines["Device"] == "cuda:0" and lines["Display"] == "Depth" and lines["State"] == "final"
    assert win.status_backend.text == "NeRF | KiloNeRF"
    assert win.status_res.text == "32x24 / 64x48"


def test_presenter_counts_interactive_frames_only():
    p = _presenter(_window())
    moving, refining = FakeFrame(), FakeFrame(refining=True)
    p.frame_shown(moving)
    p.frame_shown(refining)
    assert p.last_interactive is moving
    assert p.frame_rate.last_t is not None and p.frame_rate.ema is None  # one interactive frame so far
    p.frame_rate.ema = 25.0
    p.reset()
    assert p.last_interactive is None and p.frame_rate.ema is None
