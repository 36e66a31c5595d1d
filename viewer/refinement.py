"""Progressive refinement of a still view to full resolution, without Qt.

When the camera stops, the frame on screen (rendered at a reduced, dynamic resolution) is refined
coarse-to-fine: the resolution doubles per level up to the full one (``refinement_sizes``); each
level starts as a nearest-neighbour upsampling of the previous level and is rendered top to bottom
in row strips of about ``strip_ms`` of work, drawn over that upsampling. ``refine_frames`` yields
one displayable step per strip and consults ``should_abort`` between strips, so a newer view stops
the refinement within one strip. The render worker turns the steps into frames and Qt signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.backends.base import RenderAborted, RenderRequest


@dataclass(frozen=True)
class SideStats:
    """Timing and cost of one backend's share of a frame."""

    render_ms: float
    """Time in backend.render (summed over the strips of a refinement level)."""
    samples_per_ray: float
    flops_per_ray: float


RenderStrip = Callable[[RenderRequest, Callable[[], bool]], tuple[Sequence[np.ndarray], Sequence[SideStats]]]
"""``render(request, should_abort) -> (images, stats)``: per backend, the display image of
``request`` ((H, W, 3) float32 rgb, or (H, W) float32 depth/acc) and its SideStats; raises
RenderAborted when ``should_abort()`` turns true while rendering."""


@dataclass(frozen=True)
class RefinementStep:
    """The refinement after one more strip: what the screen shows, and what it cost so far."""

    images: list[np.ndarray]
    """Per backend: the current level, (height, width, 3) or (height, width); rows below
    ``rows_done`` are still the upsampled previous level. Own copies (safe to keep)."""
    width: int
    """Resolution of the current level."""
    height: int
    level: int
    """Index of the current level in ``refinement_sizes``."""
    levels: int
    """Number of levels of this refinement."""
    rows_done: int
    """Rows 0..rows_done of the current level are rendered at its resolution."""
    progress: float
    """Fraction of the pixels of all levels rendered so far (1.0 at the final step)."""
    render_ms: float
    """Time in the renderer since the refinement started (all backends, all strips)."""
    elapsed_ms: float
    """Wall time since the refinement started."""
    samples_per_ray: float
    """Largest over backends of the mean samples per ray over the rows of this level done so far."""
    side_stats: tuple[SideStats, ...]
    """Per backend: render time summed, samples and FLOPs per ray averaged over the strips of the
    current level so far."""
    final: bool
    """The full-resolution level is complete: the last step."""

    @property
    def level_done(self) -> bool:
        """Every row of the current level is rendered at its resolution."""
        return self.rows_done >= self.height


def crop_rows(request: RenderRequest, y0: int, y1: int) -> RenderRequest:
    """The rows y0..y1 of a request as a request of their own (principal point shifted)."""
    return replace(request, height=y1 - y0, cy=request.cy - y0)


def refinement_sizes(start_width: int, full_width: int, full_height: int) -> list[tuple[int, int]]:
    """(width, height) of the levels refining a frame ``start_width`` pixels wide to full size.

    The scale ``start_width / full_width`` doubles per level, the last level clamped to the full
    size; other levels round to at least 1x1. A start frame that is already full-width but not
    complete (a refinement interrupted in its last level, partly upsampled rows) gets one
    full-resolution level.
    """
    scale = start_width / full_width
    scales = []
    while scale < 1.0:
        scale = min(1.0, scale * 2.0)
        scales.append(scale)
    if not scales:
        scales.append(1.0)
    return [(full_width, full_height) if s >= 1.0
            else (max(1, round(full_width * s)), max(1, round(full_height * s))) for s in scales]


def upsample_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H, W, ...) resized to (height, width, ...) by nearest neighbour (a new array)."""
    ys = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    xs = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[ys][:, xs].copy()


def refine_frames(render: RenderStrip, request: RenderRequest, start: Sequence[np.ndarray], start_ms: float,
                  strip_ms: float = 100.0, should_abort: Callable[[], bool] = lambda: False
                  ) -> Iterator[RefinementStep]:
    """Refine ``start`` to ``request``'s full resolution, yielding a step after every strip.

    render: draws a strip for every backend (``RenderStrip``); it is given ``should_abort``.
    request: the view at full resolution, with the outputs to render; levels render
        ``request.scaled(w, h)`` cropped to row strips (``crop_rows``).
    start: per backend, the image on screen, (H0, W0, 3) or (H0, W0); its width sets the levels
        (``refinement_sizes``) and the first level starts as its upsampling.
    start_ms: the time ``start`` took to render; per pixel, the first estimate of the cost that
        sizes the strips (``strip_ms`` of work each, at least one row). The estimate follows the
        strips' render times; strip heights are chosen per level.
    should_abort: consulted after every step but the final one; true ends the generator before
        the next strip. A strip whose render raises RenderAborted ends it too, yielding nothing
        for that strip. Other exceptions of ``render`` propagate.

    The generator ends after the step with ``final`` set, or earlier when aborted: a consumer
    that saw no final step was aborted.
    """
    t_start = time.perf_counter()
    base = list(start)
    start_h, start_w = base[0].shape[:2]
    ms_per_pixel = start_ms / max(start_w * start_h, 1)
    sizes = refinement_sizes(start_w, request.width, request.height)
    total_pixels = sum(w * h for w, h in sizes)
    done_pixels = 0
    render_ms = 0.0
    for level, (w, h) in enumerate(sizes):
        level_request = request.scaled(w, h)
        canvas = [upsample_nearest(im, w, h) for im in base]  # strips overwrite it
        level_ms = [0.0] * len(canvas)
        level_cost = [(0.0, 0.0)] * len(canvas)  # samples and FLOPs summed over the level's rays
        rows = max(1, int(strip_ms / max(ms_per_pixel * w, 1e-6)))
        y0 = 0
        while y0 < h:
            y1 = min(h, y0 + rows)
            try:
                images, stats = render(crop_rows(level_request, y0, y1), should_abort)
            except RenderAborted:
                return
            ms = sum(s.render_ms for s in stats)
            render_ms += ms
            level_ms = [t + s.render_ms for t, s in zip(level_ms, stats)]
            rays = w * (y1 - y0)
            level_cost = [(c[0] + s.samples_per_ray * rays, c[1] + s.flops_per_ray * rays)
                          for c, s in zip(level_cost, stats)]
            ms_per_pixel = 0.5 * ms_per_pixel + 0.5 * ms / max(rays, 1)
            for c, im in zip(canvas, images):
                c[y0:y1] = im
            done_pixels += rays
            y0 = y1
            final = y0 >= h and level == len(sizes) - 1
            level_rays = w * y0
            yield RefinementStep(
                images=[c.copy() for c in canvas],  # the canvas keeps changing
                width=w, height=h, level=level, levels=len(sizes), rows_done=y0,
                progress=done_pixels / max(total_pixels, 1), render_ms=render_ms,
                elapsed_ms=(time.perf_counter() - t_start) * 1000.0,
                samples_per_ray=max(c[0] for c in level_cost) / max(level_rays, 1),
                side_stats=tuple(SideStats(t, c[0] / level_rays, c[1] / level_rays)
                                 for t, c in zip(level_ms, level_cost)),
                final=final)
            if not final and should_abort():
                return
        base = canvas
