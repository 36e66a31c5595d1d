"""RenderWorker scheduling (on a real QThread, no window) and the dynamic-resolution rule."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from PyQt6.QtCore import QThread

from viewer.camera import OrbitCamera
from viewer.render_worker import DynamicResolution, RenderWorker, ViewJob, crop_rows
from viewer_fixtures import SlowBackend, one_torch_thread, tiny_scene, viewer_backends  # noqa: F401 - fixtures


# ---------------------------------------------------------------------------- dynamic resolution
def _simulate(dyn: DynamicResolution, ms_per_pixel: float, full=(800, 800), frames=40):
    scales = []
    for _ in range(frames):
        w, h = dyn.size_for(*full)
        dyn.update(ms_per_pixel * w * h, w * h, full[0] * full[1])
        scales.append(dyn.scale)
    return scales


def test_dynamic_resolution_converges_to_the_target_frame_time():
    dyn = DynamicResolution(target_fps=30)
    # 1 ms per 1000 px: full 800x800 takes 640 ms, 33.3 ms allows 33.3k px: scale ~0.228
    scales = _simulate(dyn, 1e-3)
    expected = math.sqrt(33.333 / 640)
    assert scales[-1] == pytest.approx(expected, rel=0.2)
    assert len(set(scales[-20:])) == 1  # settled: no oscillation
    w, h = dyn.size_for(800, 800)
    assert 0.8 * 33.3 < 1e-3 * w * h < 1.2 * 33.3


def test_dynamic_resolution_clamps_and_reaches_the_limits():
    assert _simulate(DynamicResolution(30), 1.0)[-1] == pytest.approx(1 / 16)  # hopelessly slow
    assert _simulate(DynamicResolution(30), 1e-8)[-1] == 1.0  # fast: full resolution while moving
    assert DynamicResolution(30).size_for(10, 10) == (1, 1)


def test_dynamic_resolution_hysteresis_band():
    dyn = DynamicResolution(target_fps=30, initial_scale=0.5)
    full = 1000 * 1000
    px = 500 * 500
    assert not dyn.update(1000 / 30 * 1.3, px, full)  # 30% slower: sqrt -> 0.877 of the scale, inside the band
    assert dyn.scale == 0.5
    dyn2 = DynamicResolution(target_fps=30, initial_scale=0.5)
    assert dyn2.update(1000 / 30 * 2.0, px, full)  # twice too slow: 0.707, outside: changes
    assert dyn2.scale == pytest.approx(0.5 / math.sqrt(2))
    dyn2.target_fps = 15  # a lower target lets the resolution grow
    w, h = dyn2.size_for(1000, 1000)
    assert dyn2.update(dyn2.ema_ms, w * h, full)
    assert dyn2.scale > 0.5


def test_crop_rows_is_the_same_image_region(tiny_scene):
    from models.backends.nerf import NerfBackend

    b = NerfBackend("cpu")
    b.load(tiny_scene)
    req = OrbitCamera.for_scene(tiny_scene).request(24, 18, tiny_scene.near, tiny_scene.far)
    full = b.render(req).rgb
    part = b.render(crop_rows(req, 5, 11)).rgb
    torch.testing.assert_close(part, full[5:11], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- worker
@pytest.fixture
def worker(qtbot, tiny_scene, viewer_backends):  # noqa: F811
    thread = QThread()
    w = RenderWorker("cpu")
    w.moveToThread(thread)
    thread.start()
    frames, errors = [], []
    w.frameReady.connect(frames.append)
    w.renderFailed.connect(lambda n, m: errors.append((n, m)))
    w.frames, w.errors = frames, errors
    yield w
    w.clear_backends()
    w.cancel_offline()
    thread.quit()
    assert thread.wait(20_000)


def _load(qtbot, worker, scene, *names):
    loaded = []
    worker.backendLoaded.connect(lambda info: loaded.append(info.name))
    for n in names:
        worker.load_backend(scene, n)
    qtbot.waitUntil(lambda: set(names) <= set(loaded), timeout=20_000)


def _job(scene, backends, w=32, h=24, serial=0, mode="rgb", yaw=0.0):
    cam = OrbitCamera.for_scene(scene)
    cam.orbit(yaw, 0)
    return ViewJob(cam.request(w, h, scene.near, scene.far), tuple(backends), mode, serial)


def test_newest_request_replaces_pending_and_aborts_in_flight(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "slow")
    worker.dynamic = False
    # 64x48 = 3072 rays = 12 chunks of 40 ms: about half a second per frame
    worker.submit(_job(tiny_scene, ["slow"], 64, 48, serial=1))
    time.sleep(0.15)  # frame 1 is in flight
    t_submit = time.perf_counter()
    worker.submit(_job(tiny_scene, ["slow"], 64, 48, serial=2, yaw=10))
    worker.submit(_job(tiny_scene, ["slow"], 64, 48, serial=3, yaw=20))
    qtbot.waitUntil(lambda: any(f.serial == 3 for f in worker.frames), timeout=10_000)
    latency = worker.frames[-1].emitted_at - t_submit
    assert [f.serial for f in worker.frames] == [3]  # 1 aborted, 2 replaced before it started
    assert latency < 0.5 + 0.6  # one abort (<= one 40 ms chunk) + one frame, with slack for a busy CI
    assert worker.frames[-1].final


def test_continuous_motion_over_a_slow_backend_still_shows_frames(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "slow")
    worker.dynamic = False  # 0.5 s frames, new views every 20 ms: without the guard none would finish
    t_end = time.perf_counter() + 2.0
    serial = 0
    while time.perf_counter() < t_end:
        serial += 1
        worker.submit(_job(tiny_scene, ["slow"], 64, 48, serial=serial, yaw=serial))
        qtbot.wait(20)
    assert len(worker.frames) >= 1
    serials = [f.serial for f in worker.frames]
    assert serials == sorted(serials) and serials[-1] > 1
    qtbot.waitUntil(lambda: worker.frames[-1].serial == serial, timeout=10_000)  # the last view is shown


def test_refinement_survives_the_wakes_of_replaced_requests(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "nerf")
    worker.refine_delay_ms = 50
    for i in range(3):  # three submits, one render: the two extra wakes arrive after the frame
        worker.submit(_job(tiny_scene, ["nerf"], 32, 24, serial=i, yaw=i))
    qtbot.waitUntil(lambda: bool(worker.frames) and worker.frames[-1].final, timeout=30_000)
    assert worker.frames[-1].serial == 2 and worker.frames[-1].refining


def test_refinement_interrupted_in_its_last_level_still_ends_final(qtbot, worker, tiny_scene, tmp_path):
    """A screenshot (offline job) that interrupts the full-resolution level of a refinement: the
    refinement resumes afterwards and ends with a final frame equal to a direct render."""
    from viewer.render_worker import OfflineJob

    _load(qtbot, worker, tiny_scene, "nerf")
    worker.refine_delay_ms = 0
    worker.strip_ms = 1.0  # many strips per level
    job = _job(tiny_scene, ["nerf"], 32, 24, serial=5)
    worker.submit(job)
    qtbot.waitUntil(lambda: any(f.refining and f.width == 32 and not f.final for f in worker.frames), timeout=30_000)
    shot = tmp_path / "shot.png"
    worker.submit_offline(OfflineJob("screenshot", [job.request.scaled(8, 6)], "nerf", str(shot)))
    qtbot.waitUntil(lambda: shot.exists() and worker.frames[-1].final, timeout=30_000)
    last = worker.frames[-1]
    assert (last.width, last.height, last.serial) == (32, 24, 5)
    from models.backends.nerf import NerfBackend

    b = NerfBackend("cpu")
    b.load(tiny_scene)
    direct = b.render(job.request).rgb.numpy()
    np.testing.assert_allclose(last.images[0], direct, atol=1e-5)


def test_dynamic_frames_then_progressive_refinement_then_idle(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "nerf")
    worker.refine_delay_ms = 100
    worker.strip_ms = 20.0
    worker.submit(_job(tiny_scene, ["nerf"], 64, 48, serial=7))
    qtbot.waitUntil(lambda: bool(worker.frames) and worker.frames[-1].final, timeout=30_000)
    first, last = worker.frames[0], worker.frames[-1]
    assert not first.refining and (first.width, first.height) == (8, 6)  # initial scale 1/8
    assert all(f.refining for f in worker.frames[1:])
    assert len(worker.frames) >= 3  # progressive: more than one refinement step
    assert (last.width, last.height) == (64, 48) and last.serial == 7
    progress = [f.progress for f in worker.frames[1:]]
    assert progress == sorted(progress) and progress[-1] == 1.0
    # monotone coarse-to-fine
    widths = [f.width for f in worker.frames]
    assert widths == sorted(widths)
    n = len(worker.frames)
    qtbot.wait(400)
    assert len(worker.frames) == n  # idle: nothing re-rendered when nothing changes
    # the refined frame equals a direct full-resolution render
    from models.backends.nerf import NerfBackend

    b = NerfBackend("cpu")
    b.load(tiny_scene)
    direct = b.render(_job(tiny_scene, ["nerf"], 64, 48).request).rgb.numpy()
    np.testing.assert_allclose(last.images[0], direct, atol=1e-5)


def test_two_backends_render_the_same_request(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "nerf", "flat")
    worker.dynamic = False
    worker.submit(_job(tiny_scene, ["nerf", "flat"], 20, 16, mode="depth"))
    qtbot.waitUntil(lambda: bool(worker.frames), timeout=20_000)
    f = worker.frames[0]
    assert f.backends == ("nerf", "flat") and len(f.images) == 2
    assert f.images[0].shape == (16, 20)  # depth from NeRF
    assert f.images[1].shape == (16, 20, 3)  # flat has no depth: colour instead
    assert f.value_range[0] < f.value_range[1]


def test_backend_failure_is_reported_and_the_worker_goes_on(qtbot, worker, tiny_scene):
    _load(qtbot, worker, tiny_scene, "failing", "flat")
    worker.dynamic = False
    worker.submit(_job(tiny_scene, ["failing"], 16, 12))
    qtbot.waitUntil(lambda: bool(worker.errors), timeout=10_000)
    assert worker.errors[0][0] == "failing" and "simulated backend failure" in worker.errors[0][1]
    worker.submit(_job(tiny_scene, ["flat"], 16, 12, serial=5))
    qtbot.waitUntil(lambda: any(f.serial == 5 for f in worker.frames), timeout=10_000)


def test_unloadable_backend_reports_why(qtbot, worker, tmp_path):
    from viewer_fixtures import make_tiny_scene

    scene = make_tiny_scene(tmp_path / "broken")
    (scene.root / "nerf.safetensors").write_bytes(b"not a safetensors file")
    failed = []
    worker.backendFailed.connect(lambda n, m: failed.append((n, m)))
    worker.load_backend(scene, "nerf")
    qtbot.waitUntil(lambda: bool(failed), timeout=10_000)
    assert failed[0][0] == "nerf" and "nerf.safetensors" in failed[0][1]


def test_backends_load_with_the_execution_path_asked_of_them(qtbot, worker, tiny_scene):
    infos = {}
    worker.backendLoaded.connect(lambda info: infos.setdefault(info.name, info))
    worker.accel = {"nerf": "torch"}  # as `main.py view --accel nerf=torch` hands it to the window
    worker.load_backend(tiny_scene, "nerf")
    worker.load_backend(tiny_scene, "flat")
    qtbot.waitUntil(lambda: {"nerf", "flat"} <= set(infos), timeout=20_000)
    assert infos["nerf"].accel == "torch" and infos["flat"].accel == "auto"


def test_view_rejects_a_bad_execution_path_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "main.py", "view", "--accel", "r2l=warp-drive"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("error:") and "r2l" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
