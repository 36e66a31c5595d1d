"""The comparator in the real window under Xvfb: split and side-by-side views against direct
renders, one request and one dynamic resolution for both sides, quality numbers against
``eval`` (measured at the dataset view's native size by a job per side, whatever the window
and the render thread do; cached per backend and view, stale jobs aborted), the teacher
reference, heatmaps, a missing dataset, and the benchmark dialog."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PyQt6.QtCore import QPoint, QSettings, Qt

from models.backends.nerf import NerfBackend
from models.evaluation import evaluate
from models.fields.nerf_mlp import NerfMLP, NerfMLPConfig
from models.metrics import psnr as torch_psnr
from models.scene import Scene
from viewer.compare import GroundTruthStore, dataset_view, heatmap
from viewer.main_window import MainWindow
from viewer_fixtures import FlatBackend, one_torch_thread, viewer_backends  # noqa: F401 - fixtures

W, H = 64, 48
GT_SIZE = 48


def make_compare_scene(root: Path, data_root: Path) -> Path:
    """A tiny procedural dataset (48x48; 4 train, 2 val, 4 test views) and a scene for it whose
    NeRF is small and randomly initialised (seeded): quick to render, no training needed."""
    from models.data import load_dataset
    from models.data.procedural import ProceduralScene

    path = ProceduralScene().write_dataset(data_root, size=GT_SIZE, views=(4, 2, 4))
    data = load_dataset(path)
    scene = Scene.create(root, data)
    torch.manual_seed(0)
    cfg = NerfMLPConfig(depth=2, width=32, skips=(), pos_freqs=4, dir_freqs=2, view_width=16)
    coarse, fine = NerfMLP(cfg), NerfMLP(cfg)
    with torch.no_grad():
        for net in (coarse, fine):
            net.sigma.bias.fill_(0.5)
    state = {**{"coarse." + k: v for k, v in coarse.state_dict().items()},
             **{"fine." + k: v for k, v in fine.state_dict().items()}}
    scene.save_model("nerf", state, {"mlp": cfg.to_dict(), "sampling": {"n_coarse": 16, "n_fine": 16}})
    return root


@pytest.fixture(scope="module")
def compare_scene(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("compare")
    return make_compare_scene(base / "scene", base / "data")


def _window(qtbot, tmp_path, scene_root):
    win = MainWindow(settings=QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(win)
    win.worker.refine_delay_ms = 30
    win.canvas.setFixedSize(W, H)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    win.frames = []
    win.worker.frameReady.connect(win.frames.append)
    win.results = []
    win.comparator.qualityChanged.connect(win.results.append)
    assert win.open_scene(scene_root)
    qtbot.waitUntil(lambda: {"nerf", "flat"} <= set(win.infos), timeout=10_000)
    return win


@pytest.fixture
def window(qtbot, tmp_path, compare_scene, viewer_backends):  # noqa: F811
    win = _window(qtbot, tmp_path, compare_scene)
    yield win
    win.close()
    assert not win.render_thread.isRunning() and not win.comparator.loader_thread.isRunning()
    assert not win.comparator.metrics_thread.isRunning()


def _wait_final(qtbot, win, timeout=30_000):
    def ok():
        f = win.last_frame
        return (f is not None and f.final and f.request == win.current_request() and win.canvas.frame is f
                and len(f.backends) == (2 if win.comparator.active else 1))
    qtbot.waitUntil(ok, timeout=timeout)
    qtbot.waitUntil(lambda: not win.canvas._dirty, timeout=5_000)
    return win.last_frame


def _wait_quality(qtbot, win, kind, timeout=30_000):
    qtbot.waitUntil(lambda: win.comparator.quality is not None and win.comparator.quality.key[0] == kind,
                    timeout=timeout)
    qtbot.wait(50)  # the reference frame gets painted
    return win.comparator.quality


def _grab(canvas) -> np.ndarray:
    img = canvas.grabFramebuffer().convertToFormat(canvas.grabFramebuffer().Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return a.reshape(img.height(), img.width(), 3).astype(np.float64) / 255.0


def _psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _direct(scene_root, request, backend_cls=NerfBackend) -> np.ndarray:
    b = backend_cls("cpu")
    b.load(Scene.load(scene_root))
    return b.render(replace(request, outputs=frozenset({"rgb"}))).rgb.numpy()


def _drag(qtbot, widget, dx, dy):
    start = QPoint(widget.width() // 2 + 12, widget.height() // 2)  # away from the divider
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=start)
    for i in range(1, 5):
        qtbot.mouseMove(widget, start + QPoint(dx * i // 4, dy * i // 4))
        qtbot.wait(5)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=start + QPoint(dx, dy))


# ------------------------------------------------------------------------------ split view
def test_key_c_splits_the_view_and_halves_match_direct_renders(qtbot, window, compare_scene):
    _wait_final(qtbot, window)
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    assert window.comparator.active and window.compare_backend == "flat"
    frame = _wait_final(qtbot, window)
    assert frame.backends == ("nerf", "flat") and (frame.width, frame.height) == (W, H)
    shown = _grab(window.canvas)
    a = _direct(compare_scene, frame.request)
    b = _direct(compare_scene, frame.request, FlatBackend)
    # divider at the middle: columns 31 and 32 are the divider line
    left, right = slice(0, 30), slice(34, W)
    assert _psnr(shown[:, left], a[:, left]) > 40.0
    assert _psnr(shown[:, right], b[:, right]) > 40.0
    assert np.allclose(shown[H // 2, 31], (1.0, 0.85, 0.2), atol=0.01)
    # the divider follows a drag that starts on it
    qtbot.mousePress(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(32, 20))
    qtbot.mouseMove(window.canvas, QPoint(16, 20))
    qtbot.mouseRelease(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(16, 20))
    assert window.canvas.divider == pytest.approx(0.25, abs=0.02)
    assert window.last_frame.request == frame.request  # dragging the divider does not move the camera
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    assert not window.comparator.active and window.compare_backend is None
    assert len(_wait_final(qtbot, window).images) == 1


def test_side_by_side_panes_match_direct_renders(qtbot, window, compare_scene):
    assert window.comparator.set_active(True)
    qtbot.keyClick(window.canvas, Qt.Key.Key_V)
    assert window.comparator.side_by_side and window.canvas.view_size() == (W // 2, H)
    frame = _wait_final(qtbot, window)
    assert (frame.width, frame.height) == (W // 2, H)  # each side is rendered at the size of its pane
    shown = _grab(window.canvas)
    assert _psnr(shown[:, : W // 2], _direct(compare_scene, frame.request)) > 40.0
    assert _psnr(shown[:, W // 2:], _direct(compare_scene, frame.request, FlatBackend)) > 40.0


def test_both_sides_share_each_request_and_one_dynamic_resolution(qtbot, window):
    window.comparator.set_active(True)
    _wait_final(qtbot, window)
    n = len(window.frames)
    _drag(qtbot, window.canvas, 30, 5)
    qtbot.waitUntil(lambda: any(not f.refining for f in window.frames[n:]), timeout=10_000)
    _wait_final(qtbot, window)
    frames = [f for f in window.frames[n:] if f.backends == ("nerf", "flat")]
    assert frames
    for f in frames:
        assert len(f.images) == 2 and f.images[0].shape == f.images[1].shape == (f.height, f.width, 3)
        assert len(f.side_stats) == 2 and f.side_stats[0].samples_per_ray > f.side_stats[1].samples_per_ray
        if not f.refining:  # an interactive frame: its time, which drives the scale, covers both renders
            assert f.frame_ms >= sum(s.render_ms for s in f.side_stats) - 1e-6
            assert f.render_ms == pytest.approx(sum(s.render_ms for s in f.side_stats))
    assert ("nerf", "flat") in window.worker._dynres  # noqa: SLF001 - one state for the pair
    lines = "\n".join(window.comparator.side_lines(0) + window.comparator.side_lines(1))
    for text in ("A · NeRF", "B · Flat", "FPS", "ms/frame", "samples/ray", "MFLOPs/ray", "params"):
        assert text in lines
    assert window.comparator.overlays["a"].isVisible() and window.comparator.overlays["b"].isVisible()


def test_number_keys_keep_two_different_backends(qtbot, window):
    window.comparator.set_active(True)
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)  # A becomes flat, which was B: the sides swap
    assert (window.backend, window.compare_backend) == ("flat", "nerf")
    frame = _wait_final(qtbot, window)
    assert frame.backends == ("flat", "nerf")
    window.comparator.swap()
    assert (window.backend, window.compare_backend) == ("nerf", "flat")


def test_worker_tasks_run_after_views_and_a_newer_view_aborts_them(qtbot, compare_scene, viewer_backends):  # noqa: F811
    from PyQt6.QtCore import QThread

    from models.backends.base import RenderAborted
    from viewer.camera import OrbitCamera
    from viewer.render_worker import RenderWorker, ViewJob, WorkerTask

    scene = Scene.load(compare_scene)
    thread = QThread()
    worker = RenderWorker("cpu")
    worker.moveToThread(thread)
    thread.start()
    done, failed, frames = [], [], []
    worker.taskFinished.connect(lambda tag, r: done.append((tag, r)))
    worker.taskFailed.connect(lambda tag, m: failed.append((tag, m)))
    worker.frameReady.connect(frames.append)
    try:
        worker.load_backend(scene, "flat")
        cam = OrbitCamera.for_scene(scene)
        job = ViewJob(cam.request(16, 12, scene.near, scene.far), ("flat",))
        worker.submit(job)
        worker.submit_task(WorkerTask("sees", lambda backends, abort: (sorted(backends), worker.frames_rendered)))
        qtbot.waitUntil(lambda: bool(done), timeout=10_000)
        assert done[0][0] == "sees" and done[0][1][0] == ["flat"] and done[0][1][1] >= 1  # the view went first

        def busy(backends, should_abort):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 10:
                if should_abort():
                    raise RenderAborted()
                time.sleep(0.005)
            return "not aborted"

        worker.submit_task(WorkerTask("busy", busy))
        qtbot.wait(100)
        cam.orbit(10, 0)
        worker.submit(ViewJob(cam.request(16, 12, scene.near, scene.far), ("flat",)))
        qtbot.waitUntil(lambda: bool(failed), timeout=5_000)
        assert failed == [("busy", "aborted")]
        worker.submit_task(WorkerTask("bad", lambda backends, abort: 1 / 0))
        qtbot.waitUntil(lambda: len(failed) == 2, timeout=5_000)
        assert failed[1][0] == "bad" and "ZeroDivisionError" in failed[1][1]
    finally:
        worker.clear_backends()
        thread.quit()
        assert thread.wait(20_000)


def test_panel_drives_the_comparator_and_the_comparison_image_is_saved(qtbot, window, tmp_path):
    import imageio.v3 as iio

    c, panel = window.comparator, window.comparator.panel
    panel.active.click()
    assert c.active and panel.active.isChecked() and c.actions["compare"].isChecked()
    assert [panel.combo_b.itemData(i) for i in range(panel.combo_b.count())][:2] == ["nerf", "flat"]
    panel.side_by_side.click()
    assert c.side_by_side and window.canvas.side_by_side
    panel.divider.click()
    assert not c.side_by_side
    panel.show_combo.setCurrentIndex(2)
    panel.show_combo.activated.emit(2)
    assert c.show == "diff_ab" and window.canvas.compare_sources == ("diff_ab",)
    c.set_heat_max(0.5)
    assert window.canvas.heat_max == 0.5 and panel.heat_max.value() == 0.5
    c.set_show("ab")
    _wait_final(qtbot, window)
    path = tmp_path / "compare.png"
    assert c.save_image(str(path))
    assert _psnr(iio.imread(path)[..., :3] / 255.0, _grab(window.canvas)) > 40.0
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    assert not c.active and not panel.active.isChecked() and not c.overlays["a"].isVisible()


# ---------------------------------------------------------------------------------- quality
def test_quality_at_test_views_equals_eval(qtbot, window, compare_scene, tmp_path):
    from models.cli import build_parser, run
    from models.data import load_dataset

    window.comparator.set_active(True)
    got = {}
    for i in range(2):
        qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)  # test views come first
        _wait_final(qtbot, window)
        q = _wait_quality(qtbot, window, "gt")
        assert q.key[1:3] == ("test", i) and "ground truth (test" in q.reference_label
        got[i] = q
    # eval, the command, for NeRF; the same function for the second backend
    out = tmp_path / "eval.json"
    assert run(["eval", str(compare_scene), "--backend", "nerf", "--max-views", "2", "--json", str(out),
                "--quiet"], build_parser()) == 0
    views = json.loads(out.read_text())["backends"]["nerf"]["views"]
    data = load_dataset(Scene.load(compare_scene).dataset["path"])
    flat = FlatBackend("cpu")
    flat.load(None)
    flat_views = evaluate(flat, data.splits["test"], data.near, data.far, data.background, max_views=2)["views"]
    for i, q in got.items():
        assert q.psnr[0] == pytest.approx(views[i]["psnr"], abs=1e-6)
        assert q.ssim[0] == pytest.approx(views[i]["ssim"], abs=1e-6)
        assert q.psnr[1] == pytest.approx(flat_views[i]["psnr"], abs=1e-6)
        assert q.ssim[1] == pytest.approx(flat_views[i]["ssim"], abs=1e-6)
    assert f"{views[1]['psnr']:.2f}" in window.comparator.panel.quality.text()
    assert any(f"{views[1]['psnr']:.2f}" in line for line in window.comparator.side_lines(0))


def test_quality_away_from_dataset_views_is_against_the_teacher(qtbot, window, compare_scene):
    window.comparator.set_active(True)
    _drag(qtbot, window.canvas, 25, 0)
    frame = _wait_final(qtbot, window)
    q = _wait_quality(qtbot, window, "teacher")
    assert q.key[1] == frame.request and "teacher" in q.reference_label
    assert q.psnr[0] is None  # A is the teacher itself
    teacher = _direct(compare_scene, frame.request)
    flat = _direct(compare_scene, frame.request, FlatBackend)
    assert q.psnr[1] == pytest.approx(torch_psnr(torch.from_numpy(flat), torch.from_numpy(teacher)), abs=1e-3)
    assert "reference" in window.comparator.side_lines(0)[-2]
    _drag(qtbot, window.canvas, -10, 0)  # a new view: the old numbers go at once
    assert window.comparator.quality is None


def test_heatmaps_and_ground_truth_toggle(qtbot, window, compare_scene):
    c = window.comparator
    c.set_active(True)
    frame = _wait_final(qtbot, window)
    a = _direct(compare_scene, frame.request)
    b = _direct(compare_scene, frame.request, FlatBackend)
    qtbot.keyClick(window.canvas, Qt.Key.Key_X)
    assert c.show == "diff_ab" and window.canvas.compare_sources == ("diff_ab",)
    qtbot.wait(50)
    assert _psnr(_grab(window.canvas), heatmap(a, b, window.canvas.heat_max)) > 35.0

    # at a test view: the ground truth in place of B, then each side's error against it
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    _wait_final(qtbot, window)
    q = _wait_quality(qtbot, window, "gt")
    gt = GroundTruthStore(Scene.load(compare_scene)).data(("test",)).splits["test"].images[0].numpy()
    np.testing.assert_allclose(q.images[2], gt)
    qtbot.keyClick(window.canvas, Qt.Key.Key_G)
    assert c.show == "ref"
    qtbot.wait(50)
    shown = _grab(window.canvas)
    x0 = (W - GT_SIZE) // 2  # the 48x48 dataset view letterboxed in the 64x48 canvas
    assert _psnr(shown[:, x0: x0 + 22], q.images[0][:, :22]) > 40.0  # A at the dataset camera
    assert _psnr(shown[:, x0 + 26: x0 + GT_SIZE], gt[:, 26:]) > 40.0  # ground truth
    assert "showing ground truth" in c.side_lines(1)[0]
    c.set_show("diff_ref")
    qtbot.wait(50)
    shown = _grab(window.canvas)
    assert _psnr(shown[:, x0: x0 + 22], heatmap(q.images[0], gt, 0.2)[:, :22]) > 35.0
    assert _psnr(shown[:, x0 + 26: x0 + GT_SIZE], heatmap(q.images[1], gt, 0.2)[:, 26:]) > 35.0


def test_missing_dataset_falls_back_to_the_teacher(qtbot, tmp_path, compare_scene, viewer_backends):  # noqa: F811
    import shutil

    root = tmp_path / "moved"
    shutil.copytree(compare_scene, root)
    manifest = json.loads((root / "scene.json").read_text())
    manifest["dataset"]["path"] = str(tmp_path / "nowhere")
    (root / "scene.json").write_text(json.dumps(manifest))
    win = _window(qtbot, tmp_path, root)
    try:
        failures = []
        win.comparator.groundTruthFailed.connect(failures.append)
        win.comparator.set_active(True)
        qtbot.keyClick(win.canvas, Qt.Key.Key_BracketRight)
        _wait_final(qtbot, win)
        qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
        q = _wait_quality(qtbot, win, "teacher")
        assert q.psnr[0] is None and q.psnr[1] is not None
        assert "nowhere" in failures[0]
        assert not win.banner.isVisible() or win.banner.kind != "error"
    finally:
        win.close()


def test_dataset_view_maps_the_snap_order_to_splits(compare_scene):
    scene = Scene.load(compare_scene)
    assert [dataset_view(scene, i).split for i in (0, 3, 4, 7, 8, 9)] == ["test"] * 2 + ["train"] * 2 + ["val"] * 2
    v = dataset_view(scene, 5)
    assert (v.split, v.index, v.name) == ("train", 1, scene.cameras["train"][1]["name"])
    assert (v.camera.width, v.camera.height) == (GT_SIZE, GT_SIZE)
    assert dataset_view(scene, -1) is None and dataset_view(scene, 10) is None


# -------------------------------------------------------------------------------- benchmark
def test_benchmark_button_runs_bench_and_shows_table_and_plot(qtbot, window, tmp_path):
    c = window.comparator
    c.panel.bench.click()
    dlg = c.bench_dialog
    assert dlg is not None and dlg.isVisible()
    for name in ("slow", "failing"):  # test backends that are always "available"
        dlg.backend_boxes[name].setChecked(False)
    assert dlg.selected_backends() == ["nerf", "flat"]
    dlg.views.setValue(2)
    dlg.timing_views.setValue(1)
    dlg.repeats.setValue(1)
    dlg.size.setValue(32)
    dlg.out.setText(str(tmp_path / "bench"))
    with qtbot.waitSignal(dlg.benchFinished, timeout=60_000) as sig:
        assert dlg.run_button.isEnabled()
        dlg.run_button.click()
        assert not dlg.run_button.isEnabled() and dlg.cancel_button.isEnabled()
    report, out = sig.args
    assert [r["backend"] for r in report["rows"]] == ["nerf", "flat"]
    assert dlg.table.rowCount() == 2 and dlg.table.item(0, 0).text() == "NeRF"
    assert dlg.table.item(0, 1).text() == f"{report['rows'][0]['psnr']:.2f}"
    assert dlg.plot.pixmap() is not None and not dlg.plot.pixmap().isNull()
    assert dlg.progress.value() == 1000
    for name in ("bench.md", "bench.csv", "bench.json", "bench.png"):
        assert (Path(out) / name).is_file()


# ------------------------------------------------------------------ metrics at dataset views
def _test_split(scene_root):
    from models.data import load_dataset

    data = load_dataset(Scene.load(scene_root).dataset["path"])
    return data, data.splits["test"]


def _eval_views(backend, data, split, n=2):
    return evaluate(backend, split, data.near, data.far, data.background, max_views=n)["views"]


def _nerf(scene):
    b = NerfBackend("cpu")
    b.load(scene)
    return b


def _shown(overlay) -> tuple[float, float]:
    """The PSNR and SSIM an overlay shows."""
    line = next(x for x in overlay.text().splitlines() if x.startswith("PSNR"))
    parts = line.split()
    return float(parts[1]), float(parts[-1])


def _spy_jobs(comparator) -> list:
    jobs, submit = [], comparator.runner.submit

    def spy(job):
        jobs.append(job)
        submit(job)

    comparator.runner.submit = spy
    return jobs


def test_metrics_at_a_dataset_view_are_evals_at_its_native_size_without_refining(qtbot, window, compare_scene):
    c = window.comparator
    window.worker.refine_delay_ms = 10**8  # the window never refines to its full resolution
    window.canvas.setFixedSize(4 * W, 4 * H)  # and is much larger than the 48x48 dataset view
    qtbot.waitUntil(lambda: window.canvas.view_size() == (4 * W, 4 * H), timeout=5_000)
    c.set_active(True)
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert "loading ground truth" in c.side_lines(0)[-1]
    q = _wait_quality(qtbot, window, "gt")
    assert q.key[1:3] == ("test", 0) and q.backends == ("nerf", "flat")
    assert window.last_frame is None or not window.last_frame.final
    assert q.images[0].shape == q.images[1].shape == (GT_SIZE, GT_SIZE, 3)  # the dataset's size, not the window's
    data, split = _test_split(compare_scene)
    flat = FlatBackend("cpu")
    flat.load(None)
    expected = [_eval_views(_nerf(Scene.load(compare_scene)), data, split)[0], _eval_views(flat, data, split)[0]]
    for i, side in enumerate(("a", "b")):
        assert q.psnr[i] == pytest.approx(expected[i]["psnr"], abs=0.01)
        assert q.ssim[i] == pytest.approx(expected[i]["ssim"], abs=1e-4)
        shown_psnr, shown_ssim = _shown(c.overlays[side])
        assert shown_psnr == pytest.approx(expected[i]["psnr"], abs=0.01)  # displayed with two decimals
        assert shown_ssim == pytest.approx(expected[i]["ssim"], abs=1e-4)
        assert f"{expected[i]['psnr']:.2f}" in c.panel.quality.text()


def test_metrics_do_not_wait_for_the_render_thread(qtbot, window, compare_scene, monkeypatch):
    """The render thread is held busy (as by a long refinement): the metrics still arrive, and
    each side says "computing…" until its own has."""
    import threading

    from viewer.render_worker import WorkerTask

    from viewer.compare import MetricsBackends

    c = window.comparator
    job_threads, run = set(), MetricsBackends.run

    def spy(self, job):
        job_threads.add(threading.get_ident())
        return run(self, job)

    monkeypatch.setattr(MetricsBackends, "run", spy)
    c.set_active(True)
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    _wait_quality(qtbot, window, "gt")  # the ground truth is loaded
    release, holding = threading.Event(), threading.Event()
    render_thread = []

    def hold(_backends, _should_abort):
        render_thread.append(threading.get_ident())
        holding.set()
        release.wait(30)

    window.worker.submit_task(WorkerTask("hold", hold))
    try:
        qtbot.waitUntil(holding.is_set, timeout=10_000)
        qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
        view = window.current_request()
        assert c.quality is None and c.side_lines(0)[-2] == c.side_lines(1)[-2] == "computing…"
        assert "computing…" in c.panel.quality.text()
        q = _wait_quality(qtbot, window, "gt")
        assert q.key[1:3] == ("test", 1)
        assert not any(f.request == view for f in window.frames)  # the window has not rendered this view at all
    finally:
        release.set()
    assert len(job_threads) == 1 and not job_threads & {threading.get_ident(), *render_thread}
    data, split = _test_split(compare_scene)
    assert q.psnr[0] == pytest.approx(_eval_views(_nerf(Scene.load(compare_scene)), data, split)[1]["psnr"], abs=0.01)


def test_metrics_are_cached_per_backend_and_view_and_stale_jobs_abort(qtbot, window, compare_scene):
    c = window.comparator
    jobs = _spy_jobs(c)
    c.set_active(True)
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    first = _wait_quality(qtbot, window, "gt")
    assert sorted((j.backend, j.index) for j in jobs) == [("flat", 0), ("nerf", 0)]
    # swapping the sides reuses both sides' numbers at once
    c.swap()
    assert c.quality is not None and c.quality.backends == ("flat", "nerf")
    assert c.quality.psnr == first.psnr[::-1] and len(jobs) == 2
    c.swap()
    # the next view's jobs are aborted when the view changes before they are done; back at the
    # first view its numbers come from the cache
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    second = jobs[2:]
    assert sorted((j.backend, j.index) for j in second) == [("flat", 1), ("nerf", 1)]
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketLeft)
    assert all(j.cancel.is_set() for j in second) and not c._metric_jobs  # noqa: SLF001
    assert c.quality is not None and c.quality.key == first.key and c.quality.psnr == first.psnr
    assert len(jobs) == 4
    # new weights for one backend: only its number is measured again, with them
    scene = Scene.load(compare_scene)
    state, config = scene.load_model("nerf")
    state = {k: v - 3.0 if k.endswith("sigma.bias") else v for k, v in state.items()}  # thinner
    window.worker.publish_weights("nerf", state, config)
    assert c.quality is None
    assert "computing…" in c.side_lines(0) and _shown(c.overlays["b"])[0] == pytest.approx(first.psnr[1], abs=0.01)
    assert [(j.backend, j.index) for j in jobs[4:]] == [("nerf", 0)]
    q = _wait_quality(qtbot, window, "gt")
    from models.training.pipeline import PreviewScene

    data, split = _test_split(compare_scene)
    swapped = _eval_views(_nerf(PreviewScene(scene, "nerf", state, config)), data, split, 1)[0]
    assert q.psnr[0] == pytest.approx(swapped["psnr"], abs=0.01) and abs(q.psnr[0] - first.psnr[0]) > 0.01
    assert q.psnr[1] == first.psnr[1]


def test_evaluate_view_is_evaluates_row(compare_scene):
    from models.evaluation import evaluate_view

    data, split = _test_split(compare_scene)
    backend = _nerf(Scene.load(compare_scene))
    rows = _eval_views(backend, data, split, 2)
    for i in range(2):
        row = evaluate_view(backend, split, i, data.near, data.far, data.background)
        assert {k: row[k] for k in ("name", "psnr", "ssim")} == {k: rows[i][k] for k in ("name", "psnr", "ssim")}
        assert tuple(row["rgb"].shape) == (GT_SIZE, GT_SIZE, 3) and row["request"].width == GT_SIZE
