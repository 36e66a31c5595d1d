"""Evaluate a backend against a dataset split: per-view PSNR/SSIM and render time.

``eval``, ``bench`` and the comparator call this one function so their numbers agree.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from models.backends.base import RenderRequest, RendererBackend
from models.cameras import Camera
from models.data import Split
from models.metrics import psnr, ssim


def split_cameras(split: Split) -> list[Camera]:
    return [
        Camera(split.c2w[i], split.width, split.height, *(float(x) for x in split.intrinsics[i]))
        for i in range(len(split))
    ]


def resize_image(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) -> (height, width, 3) by area averaging (exact for integer factors)."""
    if img.shape[0] == height and img.shape[1] == width:
        return img
    return F.interpolate(img.permute(2, 0, 1)[None], size=(height, width), mode="area")[0].permute(1, 2, 0)


def evaluate(
    backend: RendererBackend,
    split: Split,
    near: float,
    far: float,
    background: tuple[float, float, float],
    size: int | None = None,
    max_views: int | None = None,
    precision: str = "auto",
    on_view: Callable[[int, int, dict], None] | None = None,
    keep_images: bool = False,
) -> dict:
    """Render every view of ``split`` (optionally downscaled so the longest side is ``size``).

    Returns {"views": [{name, psnr, ssim, ms, samples_per_ray, flops_per_ray}], "psnr", "ssim",
    "ms_mean", "n_views", "width", "height"} and, with ``keep_images``, "images" (list of (H,W,3)).
    """
    n = len(split) if max_views is None else min(max_views, len(split))
    views, images = [], []
    width = height = 0
    for i in range(n):
        row = evaluate_view(backend, split, i, near, far, background, size, precision)
        rgb, req = row.pop("rgb"), row.pop("request")
        row.pop("gt")
        width, height = req.width, req.height
        views.append(row)
        if keep_images:
            images.append(rgb)
        if on_view:
            on_view(i, n, row)
    out = {
        "views": views,
        "n_views": n,
        "psnr": sum(v["psnr"] for v in views) / max(n, 1),
        "ssim": sum(v["ssim"] for v in views) / max(n, 1),
        "ms_mean": sum(v["ms"] for v in views) / max(n, 1),
        "width": width,
        "height": height,
    }
    if keep_images:
        out["images"] = images
    return out


def evaluate_view(
    backend: RendererBackend,
    split: Split,
    index: int,
    near: float,
    far: float,
    background: tuple[float, float, float],
    size: int | None = None,
    precision: str = "auto",
    should_abort: Callable[[], bool] | None = None,
) -> dict:
    """View ``index`` of ``split`` rendered and measured as ``evaluate`` renders and measures it.

    Returns ``evaluate``'s row for the view ({name, psnr, ssim, ms, samples_per_ray,
    flops_per_ray}) plus "rgb" (H, W, 3), "gt" (the ground truth it was measured against) and
    "request" (the RenderRequest rendered). ``should_abort`` is checked between chunks
    (``RenderAborted`` when it returns True).
    """
    cam = Camera(split.c2w[index], split.width, split.height, *(float(x) for x in split.intrinsics[index]))
    if size is not None and max(cam.width, cam.height) != size:
        s = size / max(cam.width, cam.height)
        cam = cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
    req = RenderRequest.from_camera(cam, near, far, background=tuple(background), precision=precision)
    res = backend.render(req, should_abort or (lambda: False))
    gt = resize_image(split.images[index], cam.height, cam.width)
    return {
        "name": split.names[index],
        "psnr": psnr(res.rgb, gt),
        "ssim": ssim(res.rgb, gt),
        "ms": res.elapsed_ms,
        "samples_per_ray": res.samples_per_ray,
        "flops_per_ray": res.flops_per_ray,
        "rgb": res.rgb,
        "gt": gt,
        "request": req,
    }


# ------------------------------------------------------------------------ training validation
def validation_indices(n_views: int, count: int) -> list[int]:
    """``count`` fixed views spread evenly over a split of ``n_views`` (first and last included)."""
    count = max(1, min(count, n_views))
    return sorted({round(i * (n_views - 1) / max(count - 1, 1)) for i in range(count)})


def validate_views(render: Callable[[Camera], torch.Tensor], split: Split, indices: list[int],
                   size: int = 0) -> "Validation":
    """The validation every training job reports: mean PSNR over held-out views of ``split``.

    ``render(camera) -> (H, W, 3)`` renders one view; views are rendered at their own resolution,
    as they are tested (``size`` > 0: longest side ``size``, ground truth area-averaged to it).
    Returns the mean PSNR and, for previews, the first view's render and ground truth as uint8.
    """
    import numpy as np

    from models.training.engine import Validation

    cams = split_cameras(split)
    values, first = [], None
    for i in indices:
        cam = cams[i]
        if size and max(cam.width, cam.height) > size:
            s = size / max(cam.width, cam.height)
            cam = cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        rgb = render(cam).float().cpu()
        gt = resize_image(split.images[i], cam.height, cam.width)
        values.append(psnr(rgb, gt))
        if first is None:
            first = (rgb, gt)
    to8 = lambda x: (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    return Validation(float(np.mean(values)), to8(first[0]), to8(first[1]))
