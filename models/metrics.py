"""Image quality metrics: PSNR and SSIM (11x11 Gaussian window, sigma 1.5; Wang et al. 2004).

SSIM is computed in torch so it runs on the GPU inside the viewer and benchmarks; it matches
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)`` (tests check to 1e-4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_to_psnr(mse: float | torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(torch.as_tensor(mse, dtype=torch.float64).clamp_min(1e-20))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images (H, W, C) in [0, 1] (data range 1)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = torch.mean((a.double() - b.double().to(a.device)) ** 2)
    return float(mse_to_psnr(mse))


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two images (H, W, C) in [0, 1]; statistics over the valid (unpadded) region."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    x = a.double().permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = b.double().to(a.device).permute(2, 0, 1)[:, None]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx), gy)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
