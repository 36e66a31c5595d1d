"""The render process (viewer/render_process.py): the same frames as backends on a thread of the
GUI process, abort, a killed child, frame buffers, published weights, and the window on it.

References: every remote frame is compared with the same backend rendering the same request in
this process (exactly equal: the same code on the same device, one copy through shared memory).
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.backends import registry
from models.backends.base import BackendUnavailable, RenderAborted, RenderRequest
from models.scene import Scene
from viewer.render_process import RenderProcessError, RenderServer
from viewer_fixtures import make_tiny_scene, one_torch_thread, tiny_scene  # noqa: F401 - fixtures

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo_scene"


@pytest.fixture(scope="module")
def server():
    s = RenderServer(threads=1)
    yield s
    s.stop()
    assert not s.alive()


def _request(scene: Scene, view: int = 0, size: tuple[int, int] = (40, 30), outputs=("rgb", "depth", "acc")):
    cam = scene.camera_list("test")[view]
    req = RenderRequest.from_camera(cam, scene.near, scene.far, outputs=frozenset(outputs), precision="fp32")
    return req.scaled(*size)


def _local(scene: Scene, name: str):
    b = registry.create(name, "cpu")
    b.load(scene)
    return b


def _assert_same(a, b):
    assert torch.equal(a.rgb, b.rgb)
    for kind in ("depth", "acc"):
        x, y = getattr(a, kind), getattr(b, kind)
        assert (x is None) == (y is None), kind
        if x is not None:
            assert torch.equal(x, y), kind
    assert a.samples_per_ray == pytest.approx(b.samples_per_ray)
    assert a.flops_per_ray == pytest.approx(b.flops_per_ray)


@pytest.mark.parametrize("name", ["nerf", "kilonerf", "r2l"])
def test_remote_frames_equal_in_process_frames(server, name):
    scene = Scene.load(DEMO)
    remote = server.create(name, "cpu")
    remote.load(scene)
    local = _local(scene, name)
    assert remote.label == local.label and remote.parameter_count() == local.parameter_count()
    assert remote.supported_outputs == frozenset(local.supported_outputs)
    assert remote.device == torch.device("cpu")
    # NeRF's 256 samples per ray make a CPU frame slow: one small view for it, two for the others
    for view, size in ([(0, (12, 9))] if name == "nerf" else [(0, (40, 30)), (1, (40, 30))]):
        req = _request(scene, view, size)
        _assert_same(remote.render(req), local.render(req))


def test_abort_reaches_the_child_and_the_next_frame_renders(server):
    scene = Scene.load(DEMO)
    remote = server.create("nerf", "cpu")
    remote.load(scene)
    req = _request(scene, size=(160, 120), outputs=("rgb",))
    with pytest.raises(RenderAborted):
        remote.render(req, lambda: True)
    small = _request(scene, size=(24, 18))
    _assert_same(remote.render(small), _local(scene, "nerf").render(small))


def test_held_frames_are_never_overwritten_and_buffers_are_reused(server):
    scene = Scene.load(DEMO)
    remote = server.create("r2l", "cpu")
    remote.load(scene)
    held = remote.render(_request(scene, 0))
    copy = held.rgb.clone()
    before = server.slots.allocated
    for i in range(12):  # other views; each result dropped before the next
        res = remote.render(_request(scene, 1, size=(40 + i % 3, 30)))
        del res
    assert torch.equal(held.rgb, copy)  # the held frame's buffer was not handed out again
    assert server.slots.allocated <= before + 4  # dropped frames' buffers came back to the pool


def test_published_weights_render_in_the_child(server):
    scene = Scene.load(DEMO)
    remote, local = server.create("r2l", "cpu"), _local(scene, "r2l")
    remote.load(scene)
    tensors, config = scene.load_model("r2l", torch.device("cpu"))
    state = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in tensors.items()}
    req = _request(scene)
    original = remote.render(req).rgb.clone()
    remote.load_state_dict(state, config)
    local.load_state_dict(state, config)
    swapped = remote.render(req)
    _assert_same(swapped, local.render(req))
    assert not torch.equal(swapped.rgb, original)


def test_a_killed_child_becomes_an_error_then_restarts_with_its_backends(server):
    scene = Scene.load(DEMO)
    remote = server.create("nerf", "cpu")
    remote.load(scene)
    small = _request(scene, size=(24, 18))
    expected = _local(scene, "nerf").render(small)
    generation = server.generation
    killed = []

    def kill_during_the_frame():  # polled while the frame renders in the child
        if not killed:
            os.kill(server.pid, signal.SIGKILL)
            killed.append(True)
        return False

    with pytest.raises(RenderProcessError, match="exit code -9"):
        remote.render(_request(scene, size=(160, 120), outputs=("rgb",)), kill_during_the_frame)
    _assert_same(remote.render(small), expected)  # a new child, the backend loaded there again
    assert server.generation == generation + 1
    os.kill(server.pid, signal.SIGKILL)  # between frames: the next frame simply starts a new child
    server._proc.join(5)
    _assert_same(remote.render(small), expected)
    assert server.generation == generation + 2


def test_unavailable_and_unknown_backends_fail_as_in_process(server, tiny_scene):  # noqa: F811
    remote = server.create("r2l", "cpu")
    with pytest.raises(BackendUnavailable):
        remote.load(tiny_scene)  # the tiny scene has a NeRF only
    with pytest.raises(ValueError, match="unknown backend"):
        server.create("no-such-backend")
    with pytest.raises(ValueError, match="execution path"):
        server.create("nerf", "cpu", accel="warp-drive")


def test_window_renders_through_the_render_process(qtbot, tmp_path, tiny_scene):  # noqa: F811
    from PyQt6.QtCore import QSettings

    from viewer.main_window import MainWindow

    win = MainWindow(settings=QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat), device="cpu",
                     render_process=True)
    qtbot.addWidget(win)
    win.worker.refine_delay_ms = 50
    win.canvas.setFixedSize(64, 48)
    win.show()
    qtbot.waitExposed(win)
    frames = []
    win.worker.frameReady.connect(frames.append)
    assert win.open_scene(tiny_scene.root)
    qtbot.waitUntil(lambda: any(f.final for f in frames), timeout=60_000)
    final = next(f for f in frames if f.final)
    local = _local(tiny_scene, "nerf")
    direct = local.render(replace(final.request, outputs=frozenset({"rgb"})))
    assert torch.equal(torch.from_numpy(final.images[0]), direct.rgb)
    server = win.render_server
    assert server is not None and server.alive() and server.pid != os.getpid()
    # the demo scene: a pair of backends side by side, each half the child's render of one request
    frames.clear()
    assert win.open_scene(DEMO)
    demo = Scene.load(DEMO)
    qtbot.waitUntil(lambda: "r2l" in win.infos and "kilonerf" in win.infos, timeout=60_000)
    assert win.set_backend("kilonerf")
    win.set_compare_backend("r2l")
    qtbot.waitUntil(lambda: any(f.final and f.backends == ("kilonerf", "r2l") for f in frames), timeout=60_000)
    pair = next(f for f in frames if f.final and f.backends == ("kilonerf", "r2l"))
    for name, image in zip(pair.backends, pair.images):
        direct = _local(demo, name).render(replace(pair.request, outputs=frozenset({"rgb"})))
        assert torch.equal(torch.from_numpy(image), direct.rgb), name
    win.close()
    assert not win.render_thread.isRunning()
    assert not server.alive()


def test_a_live_preview_scene_loads_in_the_child(server):
    from models.training.pipeline import PreviewScene

    scene = Scene.load(DEMO)
    tensors, config = scene.load_model("r2l", torch.device("cpu"))
    state = {k: (v * 0.25 if v.is_floating_point() else v) for k, v in tensors.items()}
    remote = server.create("r2l", "cpu")
    remote.load(PreviewScene(scene, "r2l", state, config))  # a training snapshot, as the viewer's preview
    local = registry.create("r2l", "cpu")
    local.load(PreviewScene(scene, "r2l", state, config))
    req = _request(scene)
    _assert_same(remote.render(req), local.render(req))
