"""The training panel's live plot (viewer/panels/plots.py): tick placement, min/max decimation and
what the widget paints."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PyQt6.QtGui import QImage

from viewer.panels.plots import LivePlot, decimate, format_tick, log_ticks, nice_ticks


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0, 5) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(3.0, 97.0, 5) == pytest.approx([20.0, 40.0, 60.0, 80.0])
    assert nice_ticks(-0.013, 0.012, 5) == pytest.approx([-0.01, -0.005, 0.0, 0.005, 0.01])
    assert nice_ticks(1.0, 1.0) == [1.0] and nice_ticks(float("nan"), 1.0) == []


def test_log_ticks_are_decades_or_1_2_5():
    assert log_ticks(-3.0, 0.0) == pytest.approx([-3.0, -2.0, -1.0, 0.0])
    assert log_ticks(-2.2, -1.1) == pytest.approx([-2.0, math.log10(0.02), math.log10(0.05)])
    assert format_tick(-2.0, True) == "0.01" and format_tick(math.log10(0.05), True) == "0.05"
    assert format_tick(25000.0, False) == "25k" and format_tick(1e-5, False) == "1e-5"


def test_decimate_keeps_each_columns_extremes():
    rng = np.random.default_rng(0)
    x = np.arange(10_000, dtype=np.float64)
    y = rng.normal(size=x.size)
    xs, ys = decimate(x, y, 0.0, 9_999.0, 100)
    assert len(xs) <= 200 and np.all(np.diff(xs) >= 0)
    assert ys.max() == y.max() and ys.min() == y.min()
    # every column's min and max, exactly
    col = np.minimum((x / 9_999.0 * 100).astype(int), 99)
    for c in (0, 37, 99):
        sel = col == c
        got = ys[np.isin(xs, x[sel])]
        assert sorted(got) == sorted([y[sel].min(), y[sel].max()])
    small_x, small_y = decimate(x[:50], y[:50], 0.0, 49.0, 100)
    assert np.array_equal(small_x, x[:50]) and np.array_equal(small_y, y[:50])  # few points: unchanged


def _colour_pixels(img: np.ndarray, rgb) -> np.ndarray:
    return np.all(np.abs(img[..., :3].astype(int) - np.array(rgb)) < 40, axis=-1)


def test_plot_paints_lines_markers_and_log_axis(qtbot):
    plot = LivePlot("Loss", log_y=True)
    qtbot.addWidget(plot)
    plot.resize(320, 200)
    plot.add_series("a", "teacher", (200, 0, 0), 2.0)
    plot.add_series("v", "validation", (0, 0, 200), markers=True)
    x = np.arange(1, 2001, dtype=np.float64)
    plot.set_data("a", x, 1.0 / x)  # 1 .. 5e-4, a straight line on the log axis
    plot.set_data("v", [500.0, 1500.0], [0.1, 0.01])
    assert plot.data_range() is not None
    x0, x1, y0, y1 = plot.data_range()
    assert x0 == 1.0 and x1 == 2000.0 and y0 < math.log10(5e-4) and y1 > 0.0
    plot.show()
    qtbot.waitExposed(plot)
    img = plot.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8).reshape(h, img.bytesPerLine())
    arr = arr[:, : 3 * w].reshape(h, w, 3)
    red = _colour_pixels(arr, (200, 0, 0))
    blue = _colour_pixels(arr, (0, 0, 200))
    assert red.sum() > 150 and blue.sum() > 20
    # the red line falls from top-left to bottom-right of the plot area
    rows, cols = np.nonzero(red[:, LivePlot.MARGIN_LEFT:w - 40])  # leave the legend out
    left, right = cols < cols.min() + 20, cols > cols.max() - 20
    assert rows[left].mean() < rows[right].mean() - 50
    assert plot.paints >= 1


def test_plot_skips_non_finite_and_non_positive_values_on_a_log_axis(qtbot):
    plot = LivePlot("Loss", log_y=True)
    qtbot.addWidget(plot)
    plot.add_series("a", None, (0, 0, 0))
    plot.set_data("a", [1, 2, 3, 4, 5], [0.5, float("nan"), 0.0, -1.0, float("inf")])
    s = plot.series["a"]
    assert s.x.tolist() == [1.0] and s.y.tolist() == pytest.approx([math.log10(0.5)])
    plot.clear()
    assert plot.data_range() is None
    plot.resize(200, 150)
    plot.grab()  # an empty plot paints its frame and title
    assert plot.paints >= 1
