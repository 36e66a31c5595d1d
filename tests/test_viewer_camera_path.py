"""The camera-path panel in the real window under Xvfb (pytest-xvfb): keyframes from K and from
the panel in one path, reordering, going to a keyframe, the preview in the viewport, the video
dialog on the path, and saving / loading the path."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
from PyQt6.QtCore import QModelIndex, QPoint, Qt
from viewer_fixtures import (  # noqa: F401 - fixtures
    one_torch_thread,
    tiny_scene,
    viewer_backends,
    window,
)


def _panel(win):
    win.camera_path.show_panel()
    return win.camera_path.panel


def _eyes(win):
    return [tuple(np.round(k.c2w[:3, 3], 9)) for k in win.capture.path.keyframes]


def _record(qtbot, win, moves):
    """A keyframe (K) after each orbit in ``moves``; returns the keyframes' eyes."""
    for dx, dy in moves:
        win.camera.orbit(dx, dy)
        win.request_render()
        qtbot.keyClick(win.canvas, Qt.Key.Key_K)
    return _eyes(win)


def _drag(qtbot, widget, dx, dy):
    start = QPoint(widget.width() // 2, widget.height() // 2)
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=start)
    for i in range(1, 5):
        qtbot.mouseMove(widget, start + QPoint(dx * i // 4, dy * i // 4))
        qtbot.wait(5)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=start + QPoint(dx, dy))


def test_k_and_the_panel_edit_one_path(qtbot, window):  # noqa: F811
    panel = _panel(window)
    qtbot.keyClick(window.canvas, Qt.Key.Key_K)
    assert len(window.keyframes) == 1 and panel.list.count() == 1
    assert window.camera_box.keyframes.text() == "Keyframes: 1"
    window.camera.orbit(60, -20)
    qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)  # "Add current view"
    assert len(window.keyframes) == 2 and panel.list.count() == 2
    assert window.camera_box.keyframes.text() == "Keyframes: 2"
    np.testing.assert_array_equal(window.keyframes[1].c2w, window.camera.c2w())
    # each item: index, azimuth / elevation / distance from the scene centre, time on the path
    first, last = panel.list.item(0).text(), panel.list.item(1).text()
    assert first.startswith(" 1") and "az" in first and "el" in first and " d 4.00" in first
    assert first.endswith("0.00 s") and last.endswith(f"{window.capture.path.duration:.2f} s")
    # the Camera box's Clear empties the panel too
    window.camera_box.clearKeyframes.emit()
    assert panel.list.count() == 0 and window.camera_box.keyframes.text() == "Keyframes: 0"
    assert not panel.preview_button.isEnabled() and not panel.render_button.isEnabled()
    # the View menu's toggle hides and shows the panel
    toggle = window.camera_path.toggle_action
    view_menu = window.menuBar().actions()[1].menu()
    assert view_menu.title() == "&View" and toggle in view_menu.actions()
    toggle.trigger()
    assert not window.camera_path.dock.isVisible()
    toggle.trigger()
    assert window.camera_path.dock.isVisible()


def test_reorder_delete_and_go_to_in_the_panel(qtbot, window):  # noqa: F811
    panel = _panel(window)
    e = _record(qtbot, window, [(0, 0), (80, 0), (80, -30)])
    assert panel.list.count() == 3
    # Up on the last keyframe
    panel.list.setCurrentRow(2)
    qtbot.mouseClick(panel.up_button, Qt.MouseButton.LeftButton)
    assert _eyes(window) == [e[0], e[2], e[1]] and panel.list.currentRow() == 1
    qtbot.mouseClick(panel.down_button, Qt.MouseButton.LeftButton)
    assert _eyes(window) == e and panel.list.currentRow() == 2
    # drag and drop: the list moves the row (as QListWidget's InternalMove drop does), the path follows
    panel.list.setCurrentRow(0)
    assert panel.list.model().moveRow(QModelIndex(), 0, QModelIndex(), 3)
    qtbot.waitUntil(lambda: _eyes(window) == [e[1], e[2], e[0]], timeout=5_000)
    assert [panel.list.item(r).text()[:2] for r in range(3)] == [" 1", " 2", " 3"]  # renumbered
    assert panel.list.currentRow() == 2  # the dragged keyframe stays selected
    # a drop done as a copy inserted and the original removed ends the same way
    panel.list.insertItem(0, panel.list.item(2).clone())
    panel.list.takeItem(3)
    qtbot.waitUntil(lambda: _eyes(window) == e, timeout=5_000)
    assert panel.list.count() == 3
    # delete the selected one
    panel.list.setCurrentRow(0)
    qtbot.mouseClick(panel.delete_button, Qt.MouseButton.LeftButton)
    assert _eyes(window) == [e[1], e[2]] and window.camera_box.keyframes.text() == "Keyframes: 2"
    # double-click jumps the camera to a keyframe (and renders it)
    window.camera.orbit(-120, 40)
    item = panel.list.item(0)
    n = len(window.frames)
    at = panel.list.visualItemRect(item).center()
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=at)  # a double-click's first press
    qtbot.mouseDClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=at)
    np.testing.assert_allclose(window.camera.c2w(), window.keyframes[0].c2w, atol=1e-9)
    assert window.camera.fov_deg == window.keyframes[0].fov_deg
    qtbot.waitUntil(lambda: len(window.frames) > n, timeout=10_000)
    # Update: the selected keyframe becomes the current view
    window.camera.orbit(30, 0)
    panel.list.setCurrentRow(1)
    qtbot.mouseClick(panel.update_button, Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(window.keyframes[1].c2w, window.camera.c2w())


def test_preview_moves_the_camera_and_stops(qtbot, window):  # noqa: F811
    panel = _panel(window)
    _record(qtbot, window, [(0, 0), (150, -40)])
    first, last = window.keyframes
    ctl = window.camera_path
    panel.duration.setValue(0.5)
    assert window.capture.path.duration == 0.5
    seen = []
    window.viewRequested.connect(lambda: seen.append(window.camera.c2w()))

    # played to the end: the camera passes through in-between views and stops on the last keyframe
    with qtbot.waitSignal(ctl.previewStopped, timeout=20_000) as stopped:
        qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
        assert ctl.previewing and panel.preview_button.text() == "Stop"
    assert stopped.args == [True]
    assert not ctl.previewing and panel.preview_button.text() == "Preview"
    np.testing.assert_allclose(seen[0], first.c2w, atol=1e-9)  # it starts at the first keyframe
    np.testing.assert_allclose(window.camera.c2w(), last.c2w, atol=1e-9)
    between = [c for c in seen if not np.allclose(c, first.c2w, atol=1e-6) and not np.allclose(c, last.c2w, atol=1e-6)]
    assert between, "the preview went straight to the end"
    path = window.capture.path
    for c in between:  # every view it showed is on the path the video renders
        eyes = np.array([p.c2w[:3, 3] for p in path.poses(2001)])
        assert np.linalg.norm(eyes - c[:3, 3], axis=1).min() < 0.05

    # a drag stops a long preview where it is
    panel.duration.setValue(600.0)
    with qtbot.waitSignal(ctl.previewStarted, timeout=5_000):
        qtbot.keyClick(window.canvas, Qt.Key.Key_P)  # Camera → Preview camera path
    qtbot.waitUntil(lambda: len(seen) > 3, timeout=10_000)
    with qtbot.waitSignal(ctl.previewStopped, timeout=5_000) as stopped:
        _drag(qtbot, window.canvas, 20, 0)
    assert stopped.args == [False] and not ctl.previewing
    after_drag = window.camera.c2w()
    qtbot.wait(150)
    np.testing.assert_array_equal(window.camera.c2w(), after_drag)  # nothing moves it any more

    # so does pressing Preview again, and so does a camera change from elsewhere (R)
    qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    assert ctl.previewing
    with qtbot.waitSignal(ctl.previewStopped, timeout=5_000) as stopped:
        qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    assert stopped.args == [False] and panel.preview_button.text() == "Preview"
    qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(ctl.previewStopped, timeout=5_000):
        qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    assert not ctl.previewing

    # with fewer than two keyframes there is nothing to play
    window.capture.path.remove(1)
    assert not panel.preview_button.isEnabled()
    assert not ctl.start_preview() and not ctl.previewing


@pytest.mark.parametrize("smoothness", [0, 100])
def test_render_video_opens_the_dialog_on_the_path(qtbot, window, tmp_path, monkeypatch, smoothness):  # noqa: F811
    panel = _panel(window)
    jobs = []
    submit = window.worker.submit_offline
    monkeypatch.setattr(window.worker, "submit_offline", lambda job: (jobs.append(job), submit(job)))
    _record(qtbot, window, [(0, 0), (90, -20), (90, 10)])
    panel.duration.setValue(2.5)
    panel.smoothness.setValue(smoothness)
    assert window.capture.path.smoothness == smoothness / 100
    assert panel.smoothness_value.text() == ("Linear" if smoothness == 0 else "Catmull-Rom")
    qtbot.mouseClick(panel.render_button, Qt.MouseButton.LeftButton)
    dlg = window.capture.video_dialog
    assert dlg is not None
    qtbot.waitUntil(dlg.isVisible, timeout=5_000)
    assert dlg.source.currentData() == "keyframes" and "3" in dlg.source.currentText()
    assert dlg.fps.value() == 30 and dlg.frames.value() == 75 and dlg.duration.value() == pytest.approx(2.5)
    dlg.fps.setValue(2)  # the duration stays: 5 frames
    assert dlg.frames.value() == 5 and dlg.duration.value() == pytest.approx(2.5)
    dlg.width_.setValue(20)
    dlg.height_.setValue(16)
    gif = tmp_path / "path.gif"
    dlg.path.setText(str(gif))
    with qtbot.waitSignal(window.videoSaved, timeout=60_000):
        dlg.accept()
    assert window.capture.video_dialog is None
    frames = imageio.mimread(gif)
    assert len(frames) == 5 and frames[0].shape[:2] == (16, 20)
    assert np.abs(frames[0].astype(float) - frames[-1].astype(float)).mean() > 1  # the camera moved
    # the video's cameras are the path's poses at the chosen smoothness: keyframes at frames 0, 2, 4
    path = window.capture.path
    (job,) = jobs
    np.testing.assert_allclose(np.stack([np.asarray(r.c2w) for r in job.requests]),
                               np.stack([p.c2w for p in path.poses(5)]), atol=1e-12)
    for frame, key in ((0, 0), (2, 1), (4, 2)):
        np.testing.assert_array_equal(np.asarray(job.requests[frame].c2w), path[key].c2w)


def test_render_video_needs_two_keyframes(qtbot, window):  # noqa: F811
    panel = _panel(window)
    _record(qtbot, window, [(0, 0)])
    assert not panel.render_button.isEnabled()
    window.camera_path.render_video()
    assert window.capture.video_dialog is None
    assert window.banner.isVisible() and "two keyframes" in window.banner.text()


def test_save_and_load_the_path(qtbot, window, tmp_path, tiny_scene):  # noqa: F811
    panel = _panel(window)
    ctl = window.camera_path
    e = _record(qtbot, window, [(0, 0), (70, -10), (70, 20)])
    panel.duration.setValue(7.5)
    panel.smoothness.setValue(40)
    file = tmp_path / "paths" / "orbit"
    assert ctl.save(file)  # ".json" added
    saved = json.loads((tmp_path / "paths" / "orbit.json").read_text())
    assert saved["scene"] == tiny_scene.root.name and len(saved["keyframes"]) == 3
    assert ctl._default_file() == str(tmp_path / "paths" / "orbit.json")

    window.capture.clear_keyframes()
    panel.duration.setValue(1.0)
    assert ctl.load(tmp_path / "paths" / "orbit.json")
    assert _eyes(window) == e and panel.list.count() == 3
    assert panel.duration.value() == 7.5 and panel.smoothness.value() == 40
    assert window.camera_box.keyframes.text() == "Keyframes: 3"

    # a bad file: a message box says why, the path stays as it was
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nsv-camera-path", "version": 1, "keyframes": [{"c2w": "eye", "fov_deg": 50}]}')
    assert not ctl.load(bad)
    box = ctl.message_box
    qtbot.waitUntil(box.isVisible, timeout=5_000)
    assert "bad.json" in box.text() and "Keyframe 1: c2w must be a 4x4" in box.text()
    assert _eyes(window) == e and panel.list.count() == 3
    box.close()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert not ctl.load(broken)
    assert "malformed JSON" in ctl.message_box.text()
    ctl.message_box.close()
    (tmp_path / "taken.json").mkdir()
    assert not ctl.save(tmp_path / "taken.json")  # a folder: refused with a message
    assert "folder" in ctl.message_box.text()
    ctl.message_box.close()
    # File menu entries
    file_menu = window.menuBar().actions()[0].menu()
    texts = [a.text() for a in file_menu.actions()]
    assert "Save camera &path…" in texts and "&Load camera path…" in texts
