"""The HUD's and the status bar's text, and the presenter that keeps them up to date.

The formatting functions and ``FrameRateMeter`` take plain values (a frame is anything with the
fields of ``viewer.render_worker.Frame``), so this module imports neither Qt nor torch. The
presenter reads a window's view state and writes the text into its HUD overlay
(``set_lines``) and its status bar labels (``setText``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

HudLines = list[tuple[str, str]]
"""(key, value) rows of the HUD, top to bottom."""


class FrameRateMeter:
    """Frames per second of interactive frames as an exponential moving average.

    Frames are counted over spans of at least ``min_span_s``; each finished span adds its rate
    (frames / seconds) with weight ``smoothing``, so frames painted in a burst (two that queued
    behind a busy event loop) count at the rate they really came at, not as 1 / (their gap). A gap
    of ``max_gap_s`` or more (the camera stood still) only restarts the count.
    """

    def __init__(self, smoothing: float = 0.2, max_gap_s: float = 1.0, min_span_s: float = 0.1):
        self.smoothing = smoothing
        self.max_gap_s = max_gap_s
        self.min_span_s = min_span_s
        self.ema: float | None = None
        """The average (None before the first span)."""
        self.last_t: float | None = None
        """time.perf_counter() of the previous frame."""
        self.span_start: float | None = None
        self.span_frames = 0

    def tick(self, now: float) -> None:
        """Count a frame shown at ``now`` (seconds)."""
        if self.last_t is None or now - self.last_t >= self.max_gap_s:
            self.span_start, self.span_frames = now, 0
        else:
            self.span_frames += 1
            span = now - self.span_start
            if span >= self.min_span_s:
                fps = self.span_frames / span
                self.ema = fps if self.ema is None else self.smoothing * fps + (1.0 - self.smoothing) * self.ema
                self.span_start, self.span_frames = now, 0
        self.last_t = now


def shown_label(labels: Sequence[str]) -> str:
    """The displayed backends' labels: "A", or "A | B" in compare mode."""
    return " | ".join(labels)


def frame_state(frame, shown: tuple[str, ...]) -> str:
    """What the frame on screen is: still the previous backends' (the ``shown`` ones have not
    sent a frame yet), an interactive frame ("moving"), a refinement step or the final image."""
    if frame.backends != shown:  # a slow backend's first frame is still rendering
        return "waiting for its first frame"
    if frame.final and frame.refining:
        return f"final (refined in {frame.frame_ms / 1000:.1f} s)"
    if frame.final:
        return "final"
    if frame.refining:
        return f"refining {100 * frame.progress:.0f}% ({frame.frame_ms / 1000:.1f} s)"
    return "moving"


def no_backend_lines(window_size: tuple[int, int]) -> HudLines:
    """The HUD while no backend is shown."""
    return [("Backend", "none"), ("Window", f"{window_size[0]}x{window_size[1]}")]


def hud_lines(label: str, shown: tuple[str, ...], *, device: str | None, mode_label: str,
              window_size: tuple[int, int], frame=None, interactive=None, fps_ema: float | None = None,
              target_fps: float = 30.0, render_scale: float = 1.0) -> HudLines:
    """The HUD rows for the backends ``shown`` (their labels joined in ``label``).

    ``device``: where the first backend runs, None while it loads. ``frame``: the frame on screen
    (None: nothing rendered yet, the rows give the window size); ``interactive``: the last frame
    of a moving camera, whose timings the ms/frame row shows (default ``frame``).
    ``render_scale``: the fraction of the window's width and height views are rendered at.
    """
    lines = [("Backend", label + ("" if device is not None else "  (loading…)"))]
    if frame is not None:
        fps = f"{fps_ema:5.1f}" if fps_ema is not None else "  -  "
        pct = 100.0 * frame.width * frame.height / max(frame.full_width * frame.full_height, 1)
        i = interactive or frame
        lines += [
            ("FPS (EMA)", f"{fps}   target {target_fps:g}"),
            ("ms/frame", f"{i.render_ms:.1f} render, {i.frame_ms:.1f} total at {i.width}x{i.height}"),
            ("Resolution", f"{frame.width}x{frame.height} of {frame.full_width}x{frame.full_height} ({pct:.0f}%)"
                           + (f", {100 * render_scale:.0f}% of window" if render_scale < 1 else "")),
            ("State", frame_state(frame, shown)),
            ("Samples/ray", f"{frame.samples_per_ray:.0f}"),
        ]
    else:
        lines += [("Resolution", f"window {window_size[0]}x{window_size[1]}")]
    lines += [("Device", device if device is not None else "-"), ("Display", mode_label)]
    return lines


def resolution_status(frame) -> str:
    """The status bar's resolution: rendered / requested size of ``frame``."""
    return f"{frame.width}x{frame.height} / {frame.full_width}x{frame.full_height}"


class HudPresenter:
    """Shows a window's view state in its HUD overlay and status bar, and measures the frame rate.

    The window provides ``backend``, ``compare_backend``, ``mode``, ``infos`` (name ->
    BackendInfo), ``last_frame``, ``render_scale``, ``canvas.render_size()``,
    ``worker.target_fps``, the ``hud`` overlay and the ``status_res`` / ``status_backend``
    labels. The label functions are passed in (``backend_label``: name -> label, ``mode_labels``:
    display mode -> label) so that this module needs neither Qt nor the backends.
    """

    def __init__(self, window, backend_label: Callable[[str], str], mode_labels: Mapping[str, str]):
        self.win = window
        self.backend_label = backend_label
        self.mode_labels = mode_labels
        self.frame_rate = FrameRateMeter()
        self.last_interactive = None
        """The last frame rendered for a moving camera (its timings are the HUD's ms/frame)."""

    def frame_shown(self, frame) -> None:
        """Note a frame that reached the screen (interactive frames count towards the FPS)."""
        if not frame.refining:
            self.last_interactive = frame
            self.frame_rate.tick(time.perf_counter())

    def reset(self) -> None:
        """Forget the previous scene's frames and frame rate."""
        self.last_interactive = None
        self.frame_rate.ema = None

    def update(self) -> None:
        """Rewrite the HUD and the status bar labels from the window's current state."""
        w = self.win
        size = w.canvas.render_size()
        if w.backend is None:
            w.hud.set_lines(no_backend_lines(size))
            return
        shown = (w.backend, w.compare_backend) if w.compare_backend else (w.backend,)
        label = shown_label([self.backend_label(n) for n in shown])
        info = w.infos.get(w.backend)
        f = w.last_frame
        w.hud.set_lines(hud_lines(label, shown, device=info.device if info else None,
                                  mode_label=self.mode_labels[w.mode], window_size=size, frame=f,
                                  interactive=self.last_interactive, fps_ema=self.frame_rate.ema,
                                  target_fps=w.worker.target_fps, render_scale=w.render_scale))
        if f is not None:
            w.status_res.setText(resolution_status(f))
        w.status_backend.setText(label)
