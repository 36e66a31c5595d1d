"""PSNR/SSIM against scikit-image on real image pairs (to within 1e-3; in practice ~1e-7)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.metrics import psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return skimage_metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                 data_range=1.0, channel_axis=-1)


def image_pairs(shared_data: Path):
    g = np.random.default_rng(0)
    yield "noise", g.random((48, 40, 3)), g.random((48, 40, 3))
    base = np.clip(np.linspace(0, 1, 64)[None, :, None] * np.ones((50, 64, 3)), 0, 1)
    yield "gradient+noise", base, np.clip(base + g.normal(0, 0.05, base.shape), 0, 1)
    lego = shared_data / "nerf_synthetic_400" / "lego" / "test"
    if lego.is_dir():
        import imageio.v3 as iio

        a = iio.imread(lego / "r_0.png").astype(np.float64) / 255.0
        b = iio.imread(lego / "r_8.png").astype(np.float64) / 255.0
        # composite RGBA over white as the benchmark protocol does
        a = a[..., :3] * a[..., 3:] + (1 - a[..., 3:])
        b = b[..., :3] * b[..., 3:] + (1 - b[..., 3:])
        yield "lego r_0 vs r_8", a, b


def test_against_skimage(shared_data):
    n = 0
    for name, a, b in image_pairs(shared_data):
        ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
        ref_psnr = skimage_metrics.peak_signal_noise_ratio(a.astype(np.float32), b.astype(np.float32), data_range=1.0)
        assert abs(psnr(ta, tb) - ref_psnr) < 1e-3, name
        assert abs(ssim(ta, tb) - reference_ssim(a.astype(np.float32), b.astype(np.float32))) < 1e-3, name
        n += 1
    assert n >= 2


def test_identical_images():
    a = torch.rand(20, 20, 3)
    assert math.isclose(ssim(a, a), 1.0, abs_tol=1e-9)
    assert psnr(a, a) > 150


def test_psnr_golden():
    # MSE = 0.01 -> PSNR = -10 log10(0.01) = 20 dB
    assert math.isclose(psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.1)), 20.0, abs_tol=1e-5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(torch.zeros(2, 2, 3), torch.zeros(3, 2, 3))
