"""The main window's menu bar: File, View, Camera, Train and Help, with their shortcuts.

Every action is also added to the window, so its keys work while the menu bar is hidden or
unfocused. The Train menu is left empty for the training controller to fill; the comparator adds
its Compare menu before Help.
"""

from __future__ import annotations

from PyQt6.QtGui import QAction, QKeySequence

from models.backends import registry
from viewer.panels.backends import backend_label
from viewer.panels.view_panel import MODE_LABELS
from viewer.render_worker import MODES


class WindowMenus:
    """Builds the menus of ``window`` (a MainWindow) and keeps the actions other parts read."""

    def __init__(self, window):
        self.win = window
        scenes, capture, path = window.scene_controller, window.capture, window.camera_path
        mb = window.menuBar()
        file = mb.addMenu("&File")
        self.action(file, "&Open scene…", scenes.open_scene_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self.fill_recent)
        file.addSeparator()
        self.action(file, "Save &screenshot", capture.save_screenshot, "F12")
        self.action(file, "Save screenshot &as…", capture.save_screenshot_as, "Shift+F12")
        self.shot_guides_action = self.action(
            file, "Scene &guides in screenshots", lambda on: window.settings.setValue("guides_in_screenshots", bool(on)),
            checkable=True, checked=window.settings.value("guides_in_screenshots", False, type=bool))
        """Checked: screenshots get the scene guides drawn onto them."""
        self.action(file, "&Export video…", capture.export_video_dialog, "Ctrl+E")
        file.addSeparator()
        self.action(file, "Save camera &path…", path.save_dialog)
        self.action(file, "&Load camera path…", path.load_dialog)
        file.addSeparator()
        self.action(file, "&Quit", window.close, QKeySequence.StandardKey.Quit)

        view = mb.addMenu("&View")
        self.backend_menu = view.addMenu("&Backend")
        self.backend_actions: dict[str, QAction] = {}
        """Backend name -> its action (keys 1-9, in registry order)."""
        for i, name in enumerate(registry.BACKENDS):
            act = self.action(self.backend_menu, backend_label(name), lambda n=name: window.set_backend(n),
                              str(i + 1) if i < 9 else None)
            self.backend_actions[name] = act
            self.label_backend_action(name)
        modes = view.addMenu("&Display")
        for mode in MODES:
            self.action(modes, MODE_LABELS[mode], lambda m=mode: window.set_mode(m))
        self.action(view, "Next display &mode", window.cycle_mode, "M")
        view.addSeparator()
        self.hud_action = self.action(view, "&HUD", window.set_hud_visible, "H", checkable=True,
                                      checked=not window.hud.isHidden())
        self.guides_action = self.action(view, "Dataset cameras and &bounds", window.set_guides_visible, "F",
                                         checkable=True, checked=window.settings.value("guides", False, type=bool))
        view.addAction(window.side_dock.toggleViewAction())
        view.addAction(path.toggle_action)

        cam = mb.addMenu("&Camera")
        self.action(cam, "&Reset view", window.reset_camera, "R")
        self.action(cam, "&Previous dataset camera", lambda: window.snap_camera(-1), "[")
        self.action(cam, "&Next dataset camera", lambda: window.snap_camera(1), "]")
        self.action(cam, "Narrower field of view", lambda: window.nudge_fov(-5.0), "-")
        self.action(cam, "Wider field of view", lambda: window.nudge_fov(5.0), ["=", "+"])
        cam.addSeparator()
        self.action(cam, "Add &keyframe", capture.add_keyframe, "K")
        self.action(cam, "&Clear keyframes", capture.clear_keyframes)
        self.preview_action = self.action(cam, "Pre&view camera path", path.toggle_preview, "P")
        """Start / stop playing the camera path in the view."""
        self.action(cam, "Camera p&ath panel…", path.show_panel)

        self.train_menu = mb.addMenu("&Train")
        """Filled by the TrainingController."""

        hlp = mb.addMenu("&Help")
        self.action(hlp, "&Controls", window.toggle_help, ["F1", "?"])

    def action(self, menu, text: str, slot, shortcut=None, checkable=False, checked=False) -> QAction:
        """An action in ``menu`` and on the window: ``slot()`` when triggered, or ``slot(checked)``
        when toggled if ``checkable``; ``shortcut``: a key sequence or a list of them."""
        act = QAction(text, self.win)
        if shortcut:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(k) for k in keys])
        act.setCheckable(checkable)
        if checkable:
            act.setChecked(checked)
            act.toggled.connect(slot)
        else:
            act.triggered.connect(lambda _=False: slot())
        menu.addAction(act)
        self.win.addAction(act)  # shortcuts work while the menu bar is hidden/unfocused too
        return act

    def label_backend_action(self, name: str) -> None:
        """Name the backend's action after it, with the reason it is unavailable if it is."""
        # the action stays enabled so its key still answers with the reason in the status bar
        label = backend_label(name)
        reason = self.win.backend_selector.reasons.get(name, "")
        self.backend_actions[name].setText(f"{label}  ({reason})" if reason else label)

    def fill_recent(self) -> None:
        """List the recently opened scenes in File → Open recent (filled as the menu opens)."""
        self.recent_menu.clear()
        recent = self.win.scene_controller.recent_scenes()
        if not recent:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.win.open_scene(p))
