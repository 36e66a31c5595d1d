"""Waiting on the Qt event loop without blocking it, and measuring how long it is blocked: used by
the doc-image scripts and the viewer benchmarks, which drive the real window from a script."""

from __future__ import annotations

import time
from collections.abc import Callable

from PyQt6.QtCore import QEventLoop, QTimer


def spin(ms: float) -> None:
    """Run the event loop for ``ms`` milliseconds (events, timers and paints keep flowing)."""
    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def wait_until(cond: Callable[[], bool], timeout_s: float) -> bool:
    """Spin the event loop until ``cond()`` holds or ``timeout_s`` pass; the last ``cond()``."""
    t_end = time.perf_counter() + timeout_s
    while time.perf_counter() < t_end:
        if cond():
            return True
        spin(10)
    return cond()


class StallMeter:
    """A short QTimer on the GUI thread; the gaps between its ticks, in seconds, show how long the
    event loop was blocked."""

    def __init__(self, period_ms: int = 5):
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)
        self.last: float | None = None
        self.gaps: list[float] = []

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = None
        self.gaps = []
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    @property
    def worst_ms(self) -> float:
        return 1000.0 * max(self.gaps) if self.gaps else float("nan")
