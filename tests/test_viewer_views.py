"""View aids of the viewer: scene guides (dataset camera frustums and bounds), the dataset camera
list, the render resolution and screenshot size, the colour bar of depth / opacity.

The geometry is checked in numpy (projection against ``models.cameras.pixel_rays``); the rest in
the real window under Xvfb, asserting what is on screen and in the saved files."""

from __future__ import annotations

import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PyQt6.QtCore import Qt
from viewer_fixtures import (  # noqa: F401 - fixtures
    CANVAS_H,
    CANVAS_W,
    one_torch_thread,
    tiny_scene,
    viewer_backends,
    window,
)

from models.backends.base import RenderRequest
from models.cameras import Camera, look_at, pixel_rays
from viewer.camera import DatasetCamera, dataset_cameras
from viewer.colormap import display_to_uint8
from viewer.panels.overlays import format_value
from viewer.panels.view_panel import parse_size
from viewer.render_worker import depth_range
from viewer.scene_guides import box_segments, frustum_segments, project_segments

W, H = CANVAS_W, CANVAS_H


def _pose(eye) -> np.ndarray:
    c2w = look_at(torch.tensor(eye, dtype=torch.float32), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    return np.vstack([c2w.numpy().astype(np.float64)[:3], [0, 0, 0, 1]])


# ------------------------------------------------------------------------------ geometry
def test_projection_inverts_pixel_rays():
    c2w = _pose([3.0, 1.0, 2.0])
    req = RenderRequest(tuple(map(tuple, c2w)), 40, 30, 35.0, 33.0, 18.0, 16.0, 1.0, 6.0)
    u, v = torch.tensor([5, 30, 0]), torch.tensor([3, 20, 29])
    o, d = pixel_rays(torch.tensor(c2w, dtype=torch.float32), 35.0, 33.0, 18.0, 16.0, u, v)
    points = (o + 2.5 * d).numpy().astype(np.float64)  # on the rays through the pixel centres
    px, idx = project_segments(np.stack([points[:2], points[1:]]), req)
    assert list(idx) == [0, 1]
    np.testing.assert_allclose(px.reshape(-1, 2), [[5.5, 3.5], [30.5, 20.5], [30.5, 20.5], [0.5, 29.5]], atol=1e-4)


def test_segments_behind_the_camera_are_clipped():
    c2w = np.eye(4)  # at the origin looking down -z
    req = RenderRequest(tuple(map(tuple, c2w)), 20, 20, 10.0, 10.0, 10.0, 10.0, 0.1, 10.0)
    # one segment from 1 in front to 1 behind, one wholly behind
    seg = np.array([[[0.0, 0.0, -1.0], [0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0], [1.0, 0.0, 2.0]]])
    px, idx = project_segments(seg, req)
    assert list(idx) == [0]
    np.testing.assert_allclose(px[0, 0], [10.0, 10.0])  # the front end is on the optical axis
    assert px[0, 1, 1] < -1e3  # the clipped end runs far off the top of the image, not behind it


def test_box_and_frustum_segments():
    box = box_segments([[-1.0, -2.0, -3.0], [1.0, 2.0, 3.0]])
    assert box.shape == (12, 2, 3)
    lengths = np.sort(np.linalg.norm(box[:, 1] - box[:, 0], axis=1))
    np.testing.assert_allclose(lengths, [2.0] * 4 + [4.0] * 4 + [6.0] * 4)  # axis-aligned edges
    c2w = _pose([0.0, -4.0, 1.0])
    cam = DatasetCamera("train", "a", Camera(torch.from_numpy(c2w), 40, 30, 30.0, 30.0, 20.0, 15.0))
    f = frustum_segments([cam], 0.5)
    assert f.shape == (1, 10, 2, 3)
    np.testing.assert_allclose(f[0, :4, 0], np.broadcast_to(c2w[:3, 3], (4, 3)))  # rays start at the eye
    # the frustum corners seen by its own camera are the image corners
    req = RenderRequest(tuple(map(tuple, c2w)), 40, 30, 30.0, 30.0, 20.0, 15.0, 0.1, 10.0)
    px, _ = project_segments(f[0, 4:8], req)
    np.testing.assert_allclose(px[:, 0], [[0, 0], [40, 0], [40, 30], [0, 30]], atol=1e-6)
    # the up tick is above the image's top edge
    tick, _ = project_segments(f[0, 8:], req)
    assert tick[0, 1, 1] < 0


def test_screenshot_size_parsing():
    assert parse_size("1920x1080") == (1920, 1080)
    assert parse_size(" 640 X 480 ") == (640, 480)
    for bad, why in (("0x10", "out of range"), ("99999x2", "out of range"), ("abc", "WIDTHxHEIGHT"),
                     ("12x", "WIDTHxHEIGHT"), ("-5x5", "WIDTHxHEIGHT")):
        with pytest.raises(ValueError, match=why):
            parse_size(bad)


# ------------------------------------------------------------------------------- window
def _wait_final(qtbot, win, timeout=30_000):
    def ok():
        f = win.last_frame
        return (f is not None and f.final and f.request == win.current_request() and f.mode == win.mode
                and win.canvas.frame is f)
    qtbot.waitUntil(ok, timeout=timeout)
    qtbot.waitUntil(lambda: not win.canvas._dirty, timeout=5_000)  # painted


def _pixels(image) -> np.ndarray:
    img = image.convertToFormat(image.Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return a.reshape(img.height(), img.width(), 3).astype(int)


def _distance_to_segments(shape, px: np.ndarray) -> np.ndarray:
    """(H, W) distance of each pixel centre to the nearest 2D segment of ``px`` (K, 2, 2)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    p = np.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 1, 2)
    a, b = px[None, :, 0], px[None, :, 1]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(1).reshape(shape)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(-1) > 8


def test_guides_toggle_draws_the_frustums_and_box_but_not_into_screenshots(qtbot, window, tmp_path):  # noqa: F811
    canvas = window.canvas
    assert not window.guides_action.isChecked() and not canvas.guides_drawn()  # off by default
    _wait_final(qtbot, window)
    plain = _pixels(canvas.grab_view())
    shot_off = tmp_path / "off.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=20_000):
        window.save_screenshot(str(shot_off))

    qtbot.keyClick(canvas, Qt.Key.Key_F)
    assert window.guides_action.isChecked() and canvas.guides_drawn()
    shown = _pixels(canvas.grab_view())
    changed = _changed(shown, plain)
    assert changed.sum() >= 20  # lines are drawn over the frame
    seg, _ = canvas.guides.segments()
    px, _ = project_segments(seg, canvas.guide_request(W, H))
    near_a_line = _distance_to_segments(changed.shape, px) <= 1.5
    assert near_a_line[changed].all()  # ...exactly where the frustums and box project
    np.testing.assert_array_equal(_pixels(canvas.grabFramebuffer()), plain)  # the render alone

    shot_on = tmp_path / "on.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=20_000):
        window.save_screenshot(str(shot_on))
    np.testing.assert_array_equal(imageio.imread(shot_on), imageio.imread(shot_off))

    window.shot_guides_action.setChecked(True)  # asked for: drawn onto the saved image
    shot_guides = tmp_path / "guides.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=20_000):
        window.save_screenshot(str(shot_guides))
    drawn = _changed(imageio.imread(shot_guides)[..., :3].astype(int), imageio.imread(shot_off).astype(int))
    assert drawn.sum() >= 20 and near_a_line[drawn].mean() > 0.9  # antialiased, so a little wider

    qtbot.keyClick(canvas, Qt.Key.Key_F)
    assert not window.guides_action.isChecked()
    np.testing.assert_array_equal(_pixels(canvas.grab_view()), plain)
    assert "dataset camera frustums" in window.help.text()


def test_camera_list_snaps_the_view_to_the_clicked_camera(qtbot, window):  # noqa: F811
    cams = dataset_cameras(window.scene)
    lst = window.camera_box.cameras
    assert [lst.item(i).text() for i in range(lst.count())] == [c.label for c in cams]
    assert lst.item(0).text() == "test / v0" and lst.count() == 8
    named = DatasetCamera("train", "train/r_3.png", Camera(torch.eye(4), 8, 8, 8.0, 8.0, 4.0, 4.0))
    assert named.label == "train / r_3"
    item = lst.item(3)
    lst.scrollToItem(item)
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(item).center())
    cam = window.camera
    assert cam.dataset_index == 3
    snapped = cams[3].camera
    np.testing.assert_allclose(cam.c2w(), snapped.c2w.numpy(), atol=1e-6)
    assert cam.fov_deg == pytest.approx(math.degrees(2 * math.atan(0.5 * snapped.height / snapped.fy)))
    rendered = np.asarray(window.current_request().c2w)
    np.testing.assert_allclose(rendered, snapped.c2w.numpy(), atol=1e-6)  # rendered from it
    assert window.camera_box.dataset.text() == "#4 of 8"
    assert window.canvas.guides_current == 3  # its frustum is the highlighted one
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)  # the list follows [ ]
    assert cam.dataset_index == 4 and lst.currentRow() == 4
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    assert cam.dataset_index == -1 and not lst.selectedItems()


def test_colour_bar_shows_the_range_of_the_frame(qtbot, window):  # noqa: F811
    bar = window.colour_bar
    _wait_final(qtbot, window)
    assert not bar.isVisible()  # RGB: no colour bar
    window.set_mode("depth")
    _wait_final(qtbot, window)
    f = window.last_frame
    lo, hi = f.value_range
    assert (lo, hi) == depth_range(f.images[0]) and 0 < lo < hi
    assert bar.isVisible() and bar.title.text() == "Depth (scene units)"
    assert bar.lo.text().split()[0] == format_value(lo) and bar.hi.text().split()[0] == format_value(hi)
    assert "near" in bar.lo.text() and "far" in bar.hi.text()
    grad = bar.gradient_colours()
    # the ends of the bar have the colours the frame shows at its range's ends
    ends = display_to_uint8(np.array([[hi], [lo]], np.float32), "depth", (lo, hi))[:, 0]
    assert np.abs(grad[[0, -1]].astype(int) - ends.astype(int)).max() <= 1

    window.set_mode("acc")
    _wait_final(qtbot, window)
    assert bar.title.text() == "Opacity" and (bar.lo.text(), bar.hi.text()) == ("0", "1")
    ends = display_to_uint8(np.array([[1.0], [0.0]], np.float32), "acc")[:, 0]
    assert np.abs(bar.gradient_colours()[[0, -1]].astype(int) - ends.astype(int)).max() <= 1

    window.set_mode("rgb")
    _wait_final(qtbot, window)
    assert not bar.isVisible()


def test_render_resolution_and_screenshot_size(qtbot, window, tmp_path):  # noqa: F811
    box = window.performance_box
    assert box.render_scale() == 1.0 and window.current_request().width == W
    box.scale.setCurrentIndex(box.scale.findData(0.5))  # what choosing "50% of window" does
    assert window.render_scale == 0.5
    req = window.current_request()
    assert (req.width, req.height) == (W // 2, H // 2)
    assert window._last_job_key[0] == req  # the worker was asked for the smaller view
    _wait_final(qtbot, window)
    f = window.last_frame
    assert (f.width, f.height, f.full_width, f.full_height) == (W // 2, H // 2, W // 2, H // 2)
    assert "50% of window" in window.hud.text()

    # screenshots stay at the window size, rendered for it
    shot = tmp_path / "window.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=20_000):
        window.save_screenshot(str(shot))
    assert imageio.imread(shot).shape == (H, W, 3)

    shots = window.screenshot_box
    shots.choice.setCurrentIndex(1)  # "Custom size"
    shots.custom.setText("40x30")
    shots.custom.editingFinished.emit()
    assert window.screenshot_size == (40, 30)
    shot = tmp_path / "custom.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=20_000):
        window.save_screenshot(str(shot))
    assert imageio.imread(shot).shape == (30, 40, 3)

    # impossible sizes: a message, the previous size kept
    shots.custom.setText("0x30")
    shots.custom.editingFinished.emit()
    assert window.screenshot_size == (40, 30)
    assert window.banner.isVisible() and "out of range" in window.banner.text()
    assert not window.set_screenshot_size("huge")
    assert "WIDTHxHEIGHT" in window.banner.text() and window.screenshot_size == (40, 30)
    assert window.set_screenshot_size(None) and window.screenshot_size is None
    assert shots.choice.currentIndex() == 0
