"""Overlays drawn over the GL canvas as child widgets (so they never end up in the framebuffer
grab): the HUD, the help card listing the controls, a message banner for errors, and the colour
bar of the depth and opacity display modes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QFont, QFontDatabase, QImage, QPixmap
from PyQt6.QtWidgets import QLabel, QVBoxLayout, QWidget

from viewer.colormap import colour_bar, colour_bar_range

CONTROLS = [
    ("Left drag", "orbit around the target"),
    ("Right / middle drag", "pan"),
    ("Wheel", "dolly (zoom)"),
    ("W A S D", "fly forward / left / back / right"),
    ("Q E", "fly down / up"),
    ("R", "reset the view"),
    ("[  ]", "previous / next dataset camera (or click one in the Camera list)"),
    ("F", "show / hide dataset camera frustums and the scene bounds"),
    ("-  =", "narrower / wider field of view"),
    ("1 2 3", "switch renderer backend"),
    ("M", "cycle display: RGB / depth / opacity"),
    ("K", "add a keyframe to the camera path"),
    ("P", "preview the camera path (the Camera path panel edits it)"),
    ("C", "compare two backends (split view); Shift+C swaps the sides"),
    ("V", "compare: divider / side-by-side panes"),
    ("G  X", "compare: ground truth in place of B / difference heatmap"),
    ("Ctrl+B", "benchmark every backend"),
    ("H", "show / hide the HUD"),
    ("F12", "save a screenshot (window size or the size set in the Screenshot box)"),
    ("Ctrl+E", "export a video"),
    ("Ctrl+O", "open a scene"),
    ("F1 or ?", "show / hide this help"),
]


class HudOverlay(QLabel):
    """Top-left statistics box."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("hud")
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(max(font.pointSize(), 9))
        self.setFont(font)
        self.setStyleSheet("QLabel#hud { background: rgba(0,0,0,150); color: #e8e8e8; padding: 6px 8px;"
                           " border-radius: 4px; }")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.move(10, 10)

    def set_lines(self, lines: list[tuple[str, str]]) -> None:
        width = max((len(k) for k, _ in lines), default=0)
        self.setText("\n".join(f"{k:<{width}}  {v}" for k, v in lines))
        self.adjustSize()


class HelpOverlay(QLabel):
    """Centred card with the controls (F1 / ?)."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("help")
        rows = "".join(f"<tr><td style='padding-right:14px'><b>{k}</b></td><td>{v}</td></tr>" for k, v in CONTROLS)
        self.setText(f"<h3 style='margin:0 0 6px 0'>Controls</h3><table>{rows}</table>"
                     "<p style='color:#aaa;margin-top:8px'>F1 or ? closes this card</p>")
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setStyleSheet("QLabel#help { background: rgba(20,20,24,225); color: #eee; padding: 14px 18px;"
                           " border-radius: 8px; }")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hide()

    def place(self) -> None:
        self.adjustSize()
        p = self.parentWidget()
        self.move(max(0, (p.width() - self.width()) // 2), max(0, (p.height() - self.height()) // 2))


class MessageBanner(QLabel):
    """Bottom banner for errors and notices (stays until replaced or dismissed; click hides it)."""

    STYLES = {
        "error": "background: rgba(150,30,30,230); color: white;",
        "info": "background: rgba(30,30,36,220); color: #eee;",
    }

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = QFont(self.font())
        f.setPointSize(max(f.pointSize(), 10))
        self.setFont(f)
        self.kind = "info"
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, kind: str = "info", timeout_ms: int = 0) -> None:
        self.kind = kind
        self.setStyleSheet(f"QLabel#banner {{ {self.STYLES.get(kind, self.STYLES['info'])} padding: 10px 14px;"
                           " border-radius: 6px; }")
        self.setText(text)
        self.place()
        self.show()
        self.raise_()
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def place(self) -> None:
        p = self.parentWidget()
        w = max(200, p.width() - 40)
        self.setFixedWidth(w)
        self.adjustSize()
        self.move((p.width() - w) // 2, max(0, p.height() - self.height() - 16))

    def mousePressEvent(self, event) -> None:
        self.hide()


def format_value(x: float) -> str:
    """A colour-bar label: 3 significant digits."""
    return f"{x:.3g}"


class ColourBar(QWidget):
    """Gradient at the right edge of the view: the colour map of the depth or opacity display,
    labelled with the values at its ends: the depth range of the frame on screen (scene units;
    near at the bottom, warm) or 0..1 for opacity. Hidden in RGB mode."""

    TITLES: ClassVar[dict[str, str]] = {"depth": "Depth (scene units)", "acc": "Opacity"}
    BAR_SIZE = (16, 120)

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("colour-bar")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.setStyleSheet("QWidget#colour-bar { background: rgba(0,0,0,150); border-radius: 4px; }"
                           " QLabel { color: #e8e8e8; background: transparent; }")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(2)
        self.title = QLabel()
        self.hi = QLabel()
        self.gradient = QLabel()
        self.lo = QLabel()
        self.note = QLabel()
        self.note.setStyleSheet("color: #aaa;")
        for w in (self.title, self.hi, self.gradient, self.lo, self.note):
            lay.addWidget(w)
        self.mode: str | None = None
        self.value_range: tuple[float, float] = (0.0, 1.0)
        """(min, max) of the labels."""
        self._image: QImage | None = None
        self.hide()

    def set_range(self, mode: str, value_range: tuple[float, float]) -> None:
        """Show the bar of ``mode`` ("depth" or "acc") for a frame's ``value_range``; any other
        mode hides it."""
        if mode not in self.TITLES:
            self.mode = None
            self.hide()
            return
        if mode != self.mode:
            self.mode = mode
            self.title.setText(self.TITLES[mode])
            self.note.setText("grey: no surface hit" if mode == "depth" else "")
            self.note.setVisible(mode == "depth")
            w, h = self.BAR_SIZE
            rgb = (colour_bar(mode, h) * 255.0 + 0.5).astype(np.uint8)
            rows = np.ascontiguousarray(np.repeat(rgb[:, None], w, axis=1))  # (h, w, 3)
            self._image = QImage(rows.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.gradient.setPixmap(QPixmap.fromImage(self._image))
        lo, hi = colour_bar_range(mode, value_range)
        self.value_range = (lo, hi)
        suffix = ("  far", "  near") if mode == "depth" else ("", "")
        self.hi.setText(format_value(hi) + suffix[0])
        self.lo.setText(format_value(lo) + suffix[1])
        self.adjustSize()
        self.place()
        self.show()
        self.raise_()

    def gradient_colours(self) -> np.ndarray:
        """(h, 3) uint8 colours of the shown gradient, top row first."""
        img = self._image.convertToFormat(QImage.Format.Format_RGB888)
        ptr = img.constBits()
        ptr.setsize(img.sizeInBytes())
        a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
        return a.reshape(img.height(), img.width(), 3)[:, 0].copy()

    def place(self) -> None:
        p = self.parentWidget()
        self.move(max(0, p.width() - self.width() - 10), max(0, (p.height() - self.height()) // 2))
