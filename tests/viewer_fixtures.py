"""Shared fixtures of the viewer tests: a tiny NeRF scene on disk, cheap test backends and the
main window on that scene.

The scene holds a small randomly initialised (seeded) NeRF (2 x 32 MLP, 16 + 16 samples per ray)
so a 96x72 frame renders in well under a second on CPU; it does not need the training code.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from models.backends import registry
from models.backends.base import RenderAborted
from models.backends.null import WeightlessBackend
from models.cameras import look_at
from models.fields.nerf_mlp import NerfMLP, NerfMLPConfig
from models.scene import Scene

SCENE_W, SCENE_H = 64, 48
CANVAS_W, CANVAS_H = 64, 48
"""Canvas size of the ``window`` fixture (pixels)."""


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The CI machine has 2 (shared) cores; torch's spinning intra-op threads make tiny renders
    100x slower. Autouse in every viewer test module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_tiny_scene(root, seed: int = 0) -> Scene:
    """Write a scene folder with a tiny seeded NeRF and 6 train + 2 test cameras around the origin."""
    torch.manual_seed(seed)
    cfg = NerfMLPConfig(depth=2, width=32, skips=(), pos_freqs=4, dir_freqs=2, view_width=16)
    coarse, fine = NerfMLP(cfg), NerfMLP(cfg)
    with torch.no_grad():  # a denser, more colourful blob than the default init gives
        for net in (coarse, fine):
            net.sigma.bias.fill_(0.5)
    focal = 0.5 * SCENE_W / math.tan(math.radians(40) / 2)

    def cams(n, elevation, offset):
        out = []
        for i in range(n):
            th = 2 * math.pi * i / n + offset
            eye = torch.tensor([4 * math.cos(th) * math.cos(elevation), 4 * math.sin(th) * math.cos(elevation),
                                4 * math.sin(elevation)])
            c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
            out.append({"name": f"v{i}", "c2w": c2w.tolist(), "width": SCENE_W, "height": SCENE_H,
                        "fx": focal, "fy": focal, "cx": SCENE_W / 2, "cy": SCENE_H / 2})
        return out

    scene = Scene(root=root, near=2.0, far=6.0, aabb=[[-1.2] * 3, [1.2] * 3],
                  cameras={"train": cams(6, 0.5, 0.0), "test": cams(2, 0.3, 0.4)})
    root.mkdir(parents=True, exist_ok=True)
    state = {**{"coarse." + k: v for k, v in coarse.state_dict().items()},
             **{"fine." + k: v for k, v in fine.state_dict().items()}}
    scene.save_model("nerf", state, {"mlp": cfg.to_dict(), "sampling": {"n_coarse": 16, "n_fine": 16}})
    return Scene.load(root)


class _TestBackend(WeightlessBackend):
    """Base of the cheap test backends: no weights, always available."""

    def flops_per_sample(self) -> float:
        return 1.0


class FlatBackend(_TestBackend):
    """Colour from the ray direction; rgb only (so depth/opacity must be greyed out)."""

    name = "flat"
    label = "Flat"
    supported_outputs = frozenset({"rgb"})

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        d = torch.nn.functional.normalize(dirs, dim=-1)
        return {"rgb": 0.5 + 0.5 * d, "samples": torch.ones_like(near)}


class SlowBackend(_TestBackend):
    """Busy for ``delay`` seconds per chunk of 256 rays (half sleeping, half real torch work)."""

    name = "slow"
    label = "Slow"
    delay = 0.04
    threads: set = set()
    """Idents of the threads that ran render_rays (tests check it is never the GUI thread)."""
    busy = 0
    """Chunks in progress right now."""

    def chunk_size(self) -> int:
        return 256

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        import threading

        SlowBackend.threads.add(threading.get_ident())
        SlowBackend.busy += 1
        try:
            return self._slow_chunk(origins, near)
        finally:
            SlowBackend.busy -= 1

    def _slow_chunk(self, origins, near):
        t_end = time.perf_counter() + self.delay / 2
        a = torch.randn(128, 128)
        while time.perf_counter() < t_end:
            a = torch.tanh(a @ a)
        time.sleep(self.delay / 2)
        rgb = torch.full_like(origins, 0.25)
        return {"rgb": rgb, "depth": torch.full_like(near, 3.0), "acc": torch.ones_like(near),
                "samples": torch.ones_like(near)}


class FailingBackend(_TestBackend):
    name = "failing"
    label = "Failing"

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        raise RuntimeError("simulated backend failure")


class UnavailableBackend(_TestBackend):
    name = "missing"
    label = "Missing"

    @classmethod
    def availability(cls, scene):
        return False, "not distilled yet"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Scene:
    return make_tiny_scene(tmp_path_factory.mktemp("scenes") / "tiny")


@pytest.fixture
def viewer_backends(monkeypatch):
    """Registry order: nerf (1), flat (2), missing (3), slow (4), failing (5)."""
    backends = {"nerf": registry.BACKENDS["nerf"], "flat": FlatBackend, "missing": UnavailableBackend,
                "slow": SlowBackend, "failing": FailingBackend}
    monkeypatch.setattr(registry, "BACKENDS", backends)
    return backends


@pytest.fixture
def window(qtbot, tmp_path, tiny_scene, viewer_backends):
    """The real main window on ``tiny_scene`` with the test backends, shown and active, its canvas
    CANVAS_W x CANVAS_H and refinement starting 50 ms after the camera stops. ``win.frames``
    collects every frame the render worker delivers. Closing it must stop its render thread.

    A module using it imports ``tiny_scene`` and ``viewer_backends`` too (pytest looks the
    fixtures it depends on up in the test module)."""
    from PyQt6.QtCore import QSettings

    from viewer.main_window import MainWindow

    win = MainWindow(settings=QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(win)
    win.worker.refine_delay_ms = 50
    win.canvas.setFixedSize(CANVAS_W, CANVAS_H)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()  # window shortcuts (1/2/3, F, H, [ ]) need the active window
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    win.frames = []
    win.worker.frameReady.connect(win.frames.append)
    assert win.open_scene(tiny_scene.root)
    yield win
    win.close()
    assert not win.render_thread.isRunning()


__all__ = ["CANVAS_H", "CANVAS_W", "SCENE_H", "SCENE_W", "FailingBackend", "FlatBackend", "RenderAborted",
           "SlowBackend", "UnavailableBackend", "make_tiny_scene", "tiny_scene", "viewer_backends", "window"]
