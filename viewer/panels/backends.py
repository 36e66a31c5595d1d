"""Backend selector: every registered backend, in registry order (keys 1, 2, 3, ...).

Backends the scene has no weights for are greyed out with the reason from
``availability(scene)``; while a backend loads (on the render thread) its row says so.
"""

from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QButtonGroup, QGroupBox, QLabel, QRadioButton, QVBoxLayout, QWidget

from models.backends import registry


def backend_label(name: str) -> str:
    """The label a registered backend is shown by (its name when it has none)."""
    return registry.BACKENDS[name].label or name


class BackendSelector(QGroupBox):
    """Radio list of backends; emits ``selected(name)`` when the user picks an enabled one."""

    selected = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Renderer", parent)
        self._layout = QVBoxLayout(self)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._buttons: dict[str, QRadioButton] = {}
        self._notes: dict[str, QLabel] = {}
        self.reasons: dict[str, str] = {}
        """Why a backend is disabled (empty string: enabled)."""
        self._group.buttonClicked.connect(self._clicked)
        self.populate(list(registry.BACKENDS))

    def populate(self, names: list[str]) -> None:
        for b in self._buttons.values():
            self._group.removeButton(b)
            b.deleteLater()
        for n in self._notes.values():
            n.deleteLater()
        self._buttons.clear()
        self._notes.clear()
        for i, name in enumerate(names):
            cls = registry.BACKENDS[name]
            btn = QRadioButton(f"{i + 1}   {cls.label or name}")
            btn.setObjectName(f"backend-{name}")
            note = QLabel("")
            note.setWordWrap(True)
            note.setStyleSheet("color: gray; margin-left: 22px; font-size: 11px;")
            note.hide()
            self._group.addButton(btn)
            self._layout.addWidget(btn)
            self._layout.addWidget(note)
            self._buttons[name] = btn
            self._notes[name] = note
            self.reasons[name] = "no scene loaded"
            btn.setEnabled(False)

    def names(self) -> list[str]:
        return list(self._buttons)

    def set_availability(self, name: str, available: bool, reason: str = "") -> None:
        btn = self._buttons[name]
        self.reasons[name] = "" if available else (reason or "unavailable")
        btn.setEnabled(available)
        btn.setToolTip("" if available else self.reasons[name])
        self.set_note(name, "" if available else self.reasons[name])

    def set_note(self, name: str, text: str) -> None:
        note = self._notes[name]
        note.setText(text)
        note.setVisible(bool(text))

    def set_current(self, name: str | None) -> None:
        if name in self._buttons:
            self._buttons[name].setChecked(True)

    def is_enabled(self, name: str) -> bool:
        return name in self._buttons and self._buttons[name].isEnabled()

    def _clicked(self, button) -> None:
        for name, b in self._buttons.items():
            if b is button:
                self.selected.emit(name)
