"""Waiting on the Qt event loop without blocking it, and measuring how long it is blocked: used by
the doc-image scripts and the viewer benchmarks, which drive the real window from a script."""

from __future__ import annotations

import sys
import threading
import time
import traceback
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
    event loop was blocked. ``cpu`` holds the GUI thread's own CPU time over each gap
    (``time.thread_time``): a stall with little CPU time is time the thread waited for a core (the
    scheduler), one with as much CPU time as wall time is work the GUI thread did.

    With ``sample_stacks_ms`` > 0 a watcher thread takes the GUI thread's Python stack whenever the
    next tick is that late, so ``stacks`` says what ran during the long stalls: (gap seconds, stack
    text) of the longest ones."""

    def __init__(self, period_ms: int = 5, sample_stacks_ms: float = 0.0):
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)
        self.last: float | None = None
        self.last_cpu = 0.0
        self.gaps: list[float] = []
        self.cpu: list[float] = []
        self.sample_stacks_ms = sample_stacks_ms
        self.stacks: list[tuple[float, str]] = []
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._gui_thread = threading.get_ident()
        self._pending: list[str] = []

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self.last is not None:
            gap = now - self.last
            self.gaps.append(gap)
            self.cpu.append(cpu - self.last_cpu)
            if self._pending:
                self.stacks.append((gap, self._pending[-1]))
                self.stacks = sorted(self.stacks, reverse=True)[:5]
        self._pending = []
        self.last, self.last_cpu = now, cpu

    def _watch(self) -> None:
        late = self.sample_stacks_ms / 1000.0
        while not self._stop.wait(late / 4):
            last = self.last
            if last is not None and time.perf_counter() - last > late and not self._pending:
                frame = sys._current_frames().get(self._gui_thread)
                if frame is not None:
                    self._pending.append("".join(traceback.format_stack(frame, limit=12)))

    def start(self) -> None:
        self.last = None
        self.gaps, self.cpu, self.stacks = [], [], []
        self._gui_thread = threading.get_ident()
        self.timer.start()
        if self.sample_stacks_ms > 0:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="stall-watcher")
            self._watcher.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(1.0)
            self._watcher = None

    @property
    def worst(self) -> tuple[float, float]:
        """(wall, GUI-thread CPU) seconds of the longest gap."""
        if not self.gaps:
            return float("nan"), float("nan")
        i = max(range(len(self.gaps)), key=self.gaps.__getitem__)
        return self.gaps[i], self.cpu[i]

    @property
    def worst_ms(self) -> float:
        return 1000.0 * max(self.gaps) if self.gaps else float("nan")
