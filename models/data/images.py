"""Image reading and resampling shared by the dataset loaders.

Everything that touches image files for the loaders lives here, so that every format reports
missing, corrupt or inconsistent images with the same one-line ``DatasetError`` and decodes in
parallel the same way. Decoding uses Pillow (it releases the GIL while inflating PNG/JPEG, so a
thread pool scales with cores).

Conventions: decoded images are float32 numpy arrays in [0, 1] of shape (H, W, C) with C = 3
(RGB) or 4 (RGBA, *straight* alpha as stored in PNG files).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models.data import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def _as_float(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3|4) float32 in [0, 1] from any common Pillow mode."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0)
        return np.repeat(arr[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return np.repeat(arr[..., None], 3, axis=-1)
    if mode == "RGBA" or mode == "RGB":
        pass
    elif mode in ("LA", "PA") or (mode == "P" and "transparency" in img.info) or mode == "RGBa":
        img = img.convert("RGBA")
    else:  # L, 1, P without transparency, CMYK, YCbCr, ...
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path}: unsupported pixel format {mode}")
    return arr.astype(np.float32) / np.float32(255.0)


def max_image_pixels() -> int:
    """The largest image (width x height) a dataset may hold: 64 M pixels (8192 x 8192), or
    ``NSV_MAX_IMAGE_PIXELS``. Checked from the header, before any pixel is decoded."""
    try:
        return max(1, int(os.environ.get("NSV_MAX_IMAGE_PIXELS", 1 << 26)))
    except ValueError:
        return 1 << 26


def max_dataset_bytes() -> int:
    """The most memory a split's decoded images may take: three quarters of the machine's memory,
    or ``NSV_MAX_DATASET_BYTES``. Checked before the images are decoded (from the first one)."""
    try:
        if os.environ.get("NSV_MAX_DATASET_BYTES"):
            return max(1, int(os.environ["NSV_MAX_DATASET_BYTES"]))
        return int(0.75 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 35


def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file to (H, W, 3|4) float32 in [0, 1].

    Raises:
        DatasetError: one line naming the file when it is missing, unreadable, corrupt or larger
            than ``max_image_pixels()``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    limit = max_image_pixels()
    try:
        with Image.open(path) as img:
            if img.width * img.height > limit:
                raise DatasetError(f"{path}: {img.width}x{img.height} pixels is more than this build reads "
                                   f"({limit} pixels; set NSV_MAX_IMAGE_PIXELS to allow more)")
            img.load()
            return _as_float(img, path)
    except DatasetError:
        raise
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{path}: image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt data, bad chunks
        raise DatasetError(f"{path}: corrupt or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header only (no pixel decoding)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DatasetError(f"{path}: not a readable image (unknown or corrupt format)") from None


def find_image(base: Path) -> Path:
    """``base`` itself when it is a file, else ``base`` + the first image extension that exists.

    Blender and instant-ngp files often name frames without extension ("./train/r_0"). When
    nothing exists the ``.png`` candidate is returned so the error names a sensible file.
    """
    if base.is_file():
        return base
    for ext in IMAGE_EXTENSIONS:
        cand = base.with_name(base.name + ext)
        if cand.is_file():
            return cand
    return base if base.suffix.lower() in (".png", ".jpg", ".jpeg") else base.with_name(base.name + ".png")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def read_images(
    paths: Sequence[Path],
    prepare: Callable[[np.ndarray, Path], np.ndarray] | None = None,
    workers: int | None = None,
    channels: int | None = None,
) -> np.ndarray:
    """Decode many images in a thread pool into one stacked array.

    Args:
        paths: N image files; all must decode to the same size and channel count.
        prepare: optional per-image function applied inside the worker right after decoding
            (e.g. downsampling), so full-resolution copies never pile up in memory.
        workers: thread count (default: cores, at most 8).
        channels: 4 gives RGB files an opaque alpha channel, 3 drops alpha (no compositing),
            None keeps what the files hold (then all files must agree).
    Returns:
        (N, H, W, C) float32 array (after ``prepare``).
    Raises:
        DatasetError: missing/corrupt file, or a file whose size or channels differ from the
            first image's (the message names both).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("no images to load")

    def decode(p: Path) -> np.ndarray:
        arr = read_image(p)
        if channels == 4 and arr.shape[2] == 3:
            arr = np.concatenate([arr, np.ones_like(arr[..., :1])], axis=-1)
        elif channels == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
        return arr

    first_raw = decode(paths[0])
    first = prepare(first_raw, paths[0]) if prepare is not None else first_raw
    need, limit = len(paths) * first.size * 4, max_dataset_bytes()
    if need > limit:
        raise DatasetError(f"{paths[0].parent}: {len(paths)} images of {_describe(first)} need {need / 2**30:.1f} GiB "
                           f"of memory, more than this machine allows ({limit / 2**30:.1f} GiB; set "
                           "NSV_MAX_DATASET_BYTES to allow more, or load fewer or smaller images)")
    out = np.empty((len(paths),) + first.shape, dtype=np.float32)
    out[0] = first

    def fill(i: int) -> None:
        raw = decode(paths[i])
        if raw.shape != first_raw.shape:
            raise DatasetError(
                f"{paths[i]}: image is {_describe(raw)} but {paths[0].name} is {_describe(first_raw)} "
                "(all images of a dataset must have the same size and channels)"
            )
        out[i] = prepare(raw, paths[i]) if prepare is not None else raw

    n_workers = min(workers or default_workers(), len(paths) - 1)
    if n_workers <= 1:
        for i in range(1, len(paths)):
            fill(i)
    else:
        pool = ThreadPoolExecutor(n_workers)
        try:
            for fut in [pool.submit(fill, i) for i in range(1, len(paths))]:
                fut.result()  # re-raises the first DatasetError in submission order
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on error: skip the rest
    return out


def _describe(arr: np.ndarray) -> str:
    return f"{arr.shape[1]}x{arr.shape[0]} {'RGBA' if arr.shape[2] == 4 else 'RGB'}"


def box_downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Exact ``factor`` x ``factor`` box average of (H, W, ...) (trailing rows/columns that do not
    fill a whole block are dropped; for factor 2 this is what ``cv2.INTER_AREA`` computes)."""
    if factor == 1:
        return x
    h, w = x.shape[0] // factor, x.shape[1] // factor
    x = x[: h * factor, : w * factor]
    return x.reshape(h, factor, w, factor, *x.shape[2:]).mean(axis=(1, 3), dtype=np.float32)


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) straight alpha -> premultiplied (rgb * a, a)."""
    out = rgba.copy()
    out[..., :3] *= rgba[..., 3:4]
    return out


def composite_premultiplied(rgba_pm: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """(..., 4) premultiplied RGBA over an opaque background -> (..., 3)."""
    bg = np.asarray(background, dtype=np.float32)
    return rgba_pm[..., :3] + (1.0 - rgba_pm[..., 3:4]) * bg


def to_rgb(img: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """(H, W, 3|4) straight-alpha image -> (H, W, 3) composited over ``background``."""
    if img.shape[-1] == 3:
        return img
    return composite_premultiplied(premultiply(img), background)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """Zero-copy float32 tensor from a numpy array."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
