"""The display colour maps in numpy (the same polynomials as shaders/colormap.glsl).

The canvas colour-maps on the GPU; screenshots and videos are written from the worker thread,
which uses these to produce the same pixels without a GL context.
"""

from __future__ import annotations

import numpy as np

_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])
_VIRIDIS = np.array([
    [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
    [0.1050930431085774, 1.404613529898575, 1.384590162594685],
    [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
    [-4.634230498983486, -5.799100973351585, -19.33244095627987],
    [6.228269936347081, 14.17993336680509, 56.69055260068105],
    [4.776384997670288, -13.74514537774601, -65.35303263337234],
    [-5.435455855934631, 4.645852612178535, 26.3124352495832],
])


def turbo(x: np.ndarray) -> np.ndarray:
    """(...) in [0, 1] -> (..., 3) turbo colours."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    powers = np.concatenate([np.ones_like(x), x, x ** 2, x ** 3, x ** 4, x ** 5], -1)
    return np.clip(powers @ _TURBO.T, 0.0, 1.0)


def viridis(x: np.ndarray) -> np.ndarray:
    """(...) in [0, 1] -> (..., 3) viridis colours."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    powers = np.concatenate([x ** k for k in range(7)], -1)
    return np.clip(powers @ _VIRIDIS, 0.0, 1.0)


def display_colour(image: np.ndarray, mode: str, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """What the canvas shows: rgb as is; depth through turbo (near = warm, misses grey); acc through viridis."""
    if mode == "depth" and image.ndim == 2:
        lo, hi = value_range
        out = turbo(1.0 - (image - lo) / max(hi - lo, 1e-6))
        out[image <= 0] = 0.12
        return out
    if mode == "acc" and image.ndim == 2:
        return viridis(image)
    return np.clip(image, 0.0, 1.0)


def display_to_uint8(image: np.ndarray, mode: str, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """(H, W, 3) uint8 of ``display_colour`` (rounded like an 8-bit framebuffer)."""
    return (display_colour(image, mode, value_range) * 255.0 + 0.5).astype(np.uint8)


def colour_bar(mode: str, n: int = 256) -> np.ndarray:
    """(n, 3) colours of a vertical colour bar, top row first: the largest value at the top.

    Depth: the far end of the range at the top (turbo's cold end, as ``display_colour`` maps it),
    the near end at the bottom (warm). Opacity: 1 at the top, 0 at the bottom."""
    t = np.linspace(0.0, 1.0, n)
    if mode == "depth":
        return turbo(t)  # value hi - t (hi - lo) maps to turbo(t)
    if mode == "acc":
        return viridis(1.0 - t)
    raise ValueError(f"no colour bar for display mode {mode!r}")


def colour_bar_range(mode: str, value_range: tuple[float, float]) -> tuple[float, float]:
    """(min, max) the bar is labelled with: the frame's depth range, or 0..1 for opacity."""
    return (float(value_range[0]), float(value_range[1])) if mode == "depth" else (0.0, 1.0)
