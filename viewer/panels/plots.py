"""A small live line plot for the training panel, painted with QPainter.

The panel used pyqtgraph before. Each of its redraws went through a QGraphicsScene: the queued
scene update, auto-ranging and axis layout in Python, then a separate repaint of the window. In a
window that holds a QOpenGLWidget every repaint is composited through OpenGL (in software under
Xvfb), and on a 2-core machine shared with the trainer and the render worker one plot update
blocked the GUI thread for about 36 ms, 5 times a second (measured: the longest event-loop stalls
during a training job went from 60-90 ms to about 30 ms when the plot updates were left out).

``LivePlot`` paints at most about two points per horizontal pixel of each series (min/max per
pixel column), so a paint costs the same after 100 steps or 100,000; it only repaints when its
data change and the panel calls ``update()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import QSizePolicy, QWidget


@dataclass
class Series:
    name: str | None
    """Legend label (None: not in the legend)."""
    colour: QColor
    width: float = 1.5
    markers: bool = False
    """Draw a marker per point instead of a line."""
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values within [lo, hi]: the finest step of 1, 2 or 5 times a power of ten that
    gives at most ``target + 1`` ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    target = max(int(target), 1)
    mag = 10.0 ** math.floor(math.log10((hi - lo) / target))
    for step in (m * mag * f for f in (0.1, 1.0, 10.0, 100.0) for m in (1.0, 2.0, 5.0)):
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 <= target + 1:
            break
    return [i * step for i in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values (in log10 units) for a log axis spanning log10 values [lo, hi]: decades, with
    2 and 5 in between when the range spans fewer than two decades."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    mults = (1.0, 2.0, 5.0) if hi - lo < 2.0 else (1.0,)
    ticks = [d + math.log10(m) for d in decades for m in mults]
    ticks = [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]
    if len(ticks) < 2:  # less than a decade between two ticks: fall back to linear ticks of log10
        return nice_ticks(lo, hi, 3)
    return ticks


def format_tick(v: float, log: bool) -> str:
    if log:
        v = 10.0 ** v
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    if a >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.4g}"


def decimate(x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most two points per pixel column (the column's min and max of y, in x order); the data
    as they are when there are fewer points than columns. ``x`` must be sorted."""
    n = x.shape[0]
    if n <= 2 * columns or x1 <= x0:
        return x, y
    col = np.minimum(((x - x0) / (x1 - x0) * columns).astype(np.int64), columns - 1)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    ymin = np.minimum.reduceat(y, starts)
    ymax = np.maximum.reduceat(y, starts)
    xm = x[starts]
    xs = np.repeat(xm, 2)
    ys = np.empty(2 * len(starts))
    ys[0::2], ys[1::2] = ymin, ymax
    return xs, ys


class LivePlot(QWidget):
    """Lines and markers over a shared x axis (training step), with optional log y axis."""

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 10, 20, 30

    def __init__(self, title: str, x_label: str = "step", log_y: bool = False, legend: str = "top-right",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self.log_y = log_y
        self.legend = legend
        """Corner of the legend: "top-right" or "bottom-right"."""
        self.series: dict[str, Series] = {}
        self.paints = 0
        """How many times the plot was painted (tests)."""
        self.setMinimumSize(180, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # ------------------------------------------------------------------------------ data
    def add_series(self, key: str, name: str | None, colour, width: float = 1.5, markers: bool = False) -> None:
        self.series[key] = Series(name, QColor(*colour) if isinstance(colour, tuple) else QColor(colour),
                                  width, markers)

    def set_data(self, key: str, x, y) -> None:
        """Replace a series' points (non-finite y values, and y <= 0 on a log axis, are skipped)."""
        s = self.series[key]
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if self.log_y:
            ok &= y > 0
        s.x, s.y = x[ok], (np.log10(y[ok]) if self.log_y else y[ok])

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def data_range(self) -> tuple[float, float, float, float] | None:
        """(x0, x1, y0, y1) over all series, padded; y in log10 units on a log axis."""
        xs = [s.x for s in self.series.values() if s.x.size]
        if not xs:
            return None
        ys = [s.y for s in self.series.values() if s.y.size]
        x0, x1 = min(float(v.min()) for v in xs), max(float(v.max()) for v in xs)
        y0, y1 = min(float(v.min()) for v in ys), max(float(v.max()) for v in ys)
        if x1 <= x0:
            x0, x1 = x0 - 1.0, x1 + 1.0
        if y1 <= y0:
            pad = 0.5 if self.log_y else max(abs(y0) * 0.05, 1e-3)
            y0, y1 = y0 - pad, y1 + pad
        pad = 0.05 * (y1 - y0)
        return x0, x1, y0 - pad, y1 + pad

    # ------------------------------------------------------------------------------ paint
    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        self.paints += 1
        p = QPainter(self)
        try:
            self._paint(p)
        finally:
            p.end()

    def _paint(self, p: QPainter) -> None:
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor("white"))
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 6.0))
        p.setFont(font)
        fm = p.fontMetrics()
        p.setPen(QColor("black"))
        p.drawText(QRectF(0, 2, w, self.MARGIN_TOP - 2), Qt.AlignmentFlag.AlignCenter, self.title)
        area = QRectF(self.MARGIN_LEFT, self.MARGIN_TOP, max(w - self.MARGIN_LEFT - self.MARGIN_RIGHT, 10),
                      max(h - self.MARGIN_TOP - self.MARGIN_BOTTOM, 10))
        p.setPen(QPen(QColor(160, 160, 160), 1))
        p.drawRect(area)
        rng = self.data_range()
        if rng is None:
            return
        x0, x1, y0, y1 = rng

        def px(x):
            return area.left() + (x - x0) / (x1 - x0) * area.width()

        def py(y):
            return area.bottom() - (y - y0) / (y1 - y0) * area.height()

        # grid and tick labels
        grid = QPen(QColor(212, 212, 212), 1)
        text = QColor(60, 60, 60)
        for t in nice_ticks(x0, x1, max(2, int(area.width() // 70))):
            x = px(t)
            p.setPen(grid)
            p.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
            p.setPen(text)
            p.drawText(QRectF(x - 30, area.bottom() + 2, 60, fm.height()), Qt.AlignmentFlag.AlignHCenter,
                       format_tick(t, False))
        yt = log_ticks(y0, y1) if self.log_y else nice_ticks(y0, y1, max(2, int(area.height() // 30)))
        for t in yt:
            y = py(t)
            p.setPen(grid)
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.setPen(text)
            p.drawText(QRectF(0, y - fm.height() / 2, self.MARGIN_LEFT - 4, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, format_tick(t, self.log_y))
        p.drawText(QRectF(area.left(), area.bottom() + fm.height(), area.width(), fm.height() + 2),
                   Qt.AlignmentFlag.AlignHCenter, self.x_label)

        # data, clipped to the plot area
        p.save()
        p.setClipRect(area)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        columns = max(int(area.width()), 1)
        for s in self.series.values():
            if not s.x.size:
                continue
            if s.markers:
                p.setPen(QPen(QColor("black"), 1))
                p.setBrush(s.colour)
                for x, y in zip(s.x[-500:], s.y[-500:]):
                    p.drawEllipse(QPointF(px(x), py(y)), 3.5, 3.5)
                continue
            xs, ys = decimate(s.x, s.y, x0, x1, columns)
            pts = np.stack([area.left() + (xs - x0) / (x1 - x0) * area.width(),
                            area.bottom() - (ys - y0) / (y1 - y0) * area.height()], 1)
            p.setPen(QPen(s.colour, s.width))
            p.setBrush(Qt.BrushStyle.NoBrush)
            if len(pts) == 1:
                p.drawEllipse(QPointF(*pts[0]), 1.5, 1.5)
            else:
                p.drawPolyline(QPolygonF([QPointF(a, b) for a, b in pts.tolist()]))
        p.restore()

        # legend
        named = [s for s in self.series.values() if s.name]
        if named:
            lw = max(fm.horizontalAdvance(s.name) for s in named) + 30
            lh = fm.height() * len(named) + 6
            top = area.top() + 4 if self.legend == "top-right" else area.bottom() - lh - 4
            box = QRectF(area.right() - lw - 4, top, lw, lh)
            p.setPen(QPen(QColor(190, 190, 190), 1))
            p.setBrush(QColor(255, 255, 255, 215))
            p.drawRect(box)
            for i, s in enumerate(named):
                y = box.top() + 3 + fm.height() * (i + 0.5)
                if s.markers:
                    p.setPen(QPen(QColor("black"), 1))
                    p.setBrush(s.colour)
                    p.drawEllipse(QPointF(box.left() + 12, y), 3.5, 3.5)
                else:
                    p.setPen(QPen(s.colour, max(s.width, 1.5)))
                    p.drawLine(QPointF(box.left() + 4, y), QPointF(box.left() + 20, y))
                p.setPen(text)
                p.drawText(QRectF(box.left() + 24, y - fm.height() / 2, lw - 24, fm.height()),
                           Qt.AlignmentFlag.AlignVCenter, s.name)
