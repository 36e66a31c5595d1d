"""Sparse-view regularisation after RegNeRF (Niemeyer et al., CVPR 2022).

Three pieces, used by the teacher when ``TeacherConfig.sparse`` is set:

- ``select_views``: the standard sparse split. LLFF: the test views are every 8th image (the
  loader's holdout) and the N training views are spread evenly over the remaining ones
  (``linspace(0, n_train - 1, N)`` rounded, RegNeRF's rule). Blender-format scenes use the same
  rule over their train split (a stated, deterministic choice).
- Depth smoothness: each step renders 8x8 patches from random poses *around* the training cameras
  (never the training poses themselves) and penalises the squared differences of expected depth
  between horizontally and vertically neighbouring pixels (RegNeRF's ``compute_tv_norm``, mean
  over the patch). The weight decays linearly from 400 to 0.1 over the first 512 steps.
- Sample-space annealing: for the first N_t steps the [near, far] interval is shrunk around a
  mid point and grows linearly back to the full range (RegNeRF LLFF: N_t 512, p_s 1e-4,
  mid at 100% of the range; DTU: N_t 256, p_s 0.5).

RegNeRF's third term, a colour likelihood from a normalising flow trained on JFT-300M, is left
out: the flow model was never released, and nothing here substitutes for it.

FreeNeRF's two terms (Yang et al., CVPR 2023), selectable beside or instead of RegNeRF's:

- Frequency regularisation (``freq_mask``): the positional-encoding bands of the position are
  unmasked linearly from low to high over the first ``freq_reg_fraction`` of training (the raw
  coordinates always pass; band k is fully visible once L t / T + 1 > k + 1).
- Occlusion regularisation (``occlusion_points``): the density at the first ``occlusion_samples``
  of ``occlusion_of`` evenly spaced samples of each training ray (the part of the ray nearest
  the camera, where few-view models grow floaters) is penalised with weight ``occlusion_weight``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.cameras import look_at_batch, ndc_rays, pixel_rays
from models.data import Split


@dataclass(frozen=True)
class SparseViewConfig:
    """RegNeRF-style regularisation of the NeRF teacher."""

    views: int = 3
    """Number of training views kept (3, 6 or 9 in the RegNeRF protocol; 0 keeps all)."""
    depth_smoothness: bool = True
    """Render random unobserved patches and penalise non-smooth expected depth."""
    patch_size: int = 8
    """Side of the square patches (8 in RegNeRF)."""
    n_patches: int = 64
    """Patches per step (64 x 8 x 8 = 4096 rays in RegNeRF)."""
    weight_start: float = 400.0
    """Depth-smoothness weight at step 0."""
    weight_end: float = 0.1
    """Depth-smoothness weight after ``weight_steps``."""
    weight_steps: int = 512
    """Steps of the linear decay of the weight."""
    anneal_steps: int = 512
    """Sample-space annealing length N_t (0: off)."""
    anneal_start: float = 1e-4
    """Fraction p_s of the [near, far] range sampled at step 0."""
    anneal_mid: float = 1.0
    """Where the annealed interval is centred, as a fraction of [near, far] (LLFF: 1.0)."""
    grad_clip: float = 0.1
    """Gradient norm clipping (RegNeRF: 0.1; 0 disables)."""
    pose_jitter: float = 0.1
    """Random poses: extra margin around the training cameras' box, as a fraction of its size."""
    freq_reg: bool = False
    """FreeNeRF's frequency regularisation of the position encoding (``freq_mask``)."""
    freq_reg_fraction: float = 0.9
    """Fraction of training over which the bands are unmasked (FreeNeRF: 90%)."""
    occlusion_weight: float = 0.0
    """FreeNeRF's occlusion loss weight (0.01 in the paper; 0: off)."""
    occlusion_samples: int = 10
    """Samples nearest the camera whose density is penalised (FreeNeRF's ``occ_reg_range``)."""
    occlusion_of: int = 128
    """Evenly spaced samples of [near, far] that those are the first of (FreeNeRF: 128 for LLFF)."""

    @staticmethod
    def preset(views: int, mode: str | None) -> "SparseViewConfig":
        """The settings of ``train --views N [--sparse-reg MODE]``: MODE "regnerf" (depth smoothness,
        sample-space annealing, gradient clipping), "freenerf" (frequency and occlusion
        regularisation), "both", or None (plain NeRF on the N views, the baseline)."""
        if mode not in (None, "regnerf", "freenerf", "both"):
            raise ValueError(f"--sparse-reg must be regnerf, freenerf or both, got {mode!r}")
        regnerf, freenerf = mode in ("regnerf", "both"), mode in ("freenerf", "both")
        return SparseViewConfig(views=views, depth_smoothness=regnerf, anneal_steps=512 if regnerf else 0,
                                grad_clip=0.1 if regnerf else 0.0, freq_reg=freenerf,
                                occlusion_weight=0.01 if freenerf else 0.0)


def select_views(split: Split, n: int) -> tuple[Split, list[int]]:
    """Keep ``n`` views of ``split`` spread evenly over it; returns the subset and its indices."""
    total = len(split)
    if n <= 0 or n >= total:
        return split, list(range(total))
    idx = [int(round(x)) for x in torch.linspace(0, total - 1, n).tolist()]
    sel = torch.tensor(idx)
    sub = Split(
        names=[split.names[i] for i in idx],
        images=split.images[sel],
        c2w=split.c2w[sel],
        intrinsics=split.intrinsics[sel],
        depth=None if split.depth is None else split.depth[sel],
        alpha=None if split.alpha is None else split.alpha[sel],
    )
    return sub, idx


def freq_mask(n_freqs: int, progress: float, reg_fraction: float) -> torch.Tensor:
    """FreeNeRF's visibility (n_freqs,) of the positional-encoding bands at a point of training.

    With t / T = progress / reg_fraction and ptr = n_freqs t / T + 1: the first floor(ptr) bands
    are visible (1), the next one by the fraction ptr - floor(ptr), the rest masked (0); from
    t = T on every band is visible. E.g. 10 bands at t / T = 0: [1, 0, ..., 0]; at 0.55:
    ptr = 6.5, bands 0-5 visible, band 6 at 0.5.
    """
    if reg_fraction <= 0 or progress >= reg_fraction:
        return torch.ones(n_freqs)
    ptr = min(n_freqs * progress / reg_fraction + 1.0, float(n_freqs))
    k = torch.arange(n_freqs, dtype=torch.float64)
    return (ptr - k).clamp(0.0, 1.0).float()


def occlusion_points(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                     cfg: SparseViewConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(R * M, 3) points at the first M = ``occlusion_samples`` of ``occlusion_of`` stratified
    samples of each ray's [near, far] (FreeNeRF's occlusion regularisation acts on their density)."""
    m, n = cfg.occlusion_samples, max(cfg.occlusion_of, cfg.occlusion_samples)
    bins = torch.arange(m, device=origins.device, dtype=origins.dtype)
    u = torch.rand(origins.shape[0], m, generator=generator, device=origins.device, dtype=origins.dtype)
    t = near[:, None] + (far - near)[:, None] * (bins[None] + u) / n  # (R, M), within the first M of n bins
    return (origins[:, None, :] + t[..., None] * dirs[:, None, :]).reshape(-1, 3)


def smoothness_weight(step: int, cfg: SparseViewConfig) -> float:
    """Linear decay from weight_start to weight_end over weight_steps, then constant."""
    if cfg.weight_steps <= 0:
        return cfg.weight_end
    f = min(step / cfg.weight_steps, 1.0)
    return cfg.weight_start + (cfg.weight_end - cfg.weight_start) * f


def annealed_bounds(near: float, far: float, step: int, cfg: SparseViewConfig) -> tuple[float, float]:
    """[near, far] shrunk around mid = near + anneal_mid (far - near) for the first anneal_steps.

    The kept fraction grows linearly from anneal_start to 1 (RegNeRF's ``anneal_nearfar``).
    """
    if cfg.anneal_steps <= 0 or step >= cfg.anneal_steps:
        return near, far
    p = min(1.0, cfg.anneal_start + (1.0 - cfg.anneal_start) * step / cfg.anneal_steps)
    mid = near + cfg.anneal_mid * (far - near)
    return mid + (near - mid) * p, mid + (far - mid) * p


def depth_tv_loss(depth: torch.Tensor) -> torch.Tensor:
    """Depth smoothness of patches (P, S, S): mean of squared horizontal + vertical differences.

    With d00 = depth[:, :-1, :-1], d01 = depth[:, :-1, 1:], d10 = depth[:, 1:, :-1]:
    loss = mean((d00 - d01)^2 + (d00 - d10)^2)  (RegNeRF's compute_tv_norm, l2).
    """
    d00 = depth[:, :-1, :-1]
    d01 = depth[:, :-1, 1:]
    d10 = depth[:, 1:, :-1]
    return ((d00 - d01) ** 2 + (d00 - d10) ** 2).mean()


class RandomPatchSampler:
    """Rays of 8x8 patches seen from random poses around the training cameras."""

    def __init__(self, train: Split, cfg: SparseViewConfig, ndc: dict | None, target: torch.Tensor,
                 up: torch.Tensor, device: torch.device, generator: torch.Generator):
        self.cfg, self.ndc, self.device, self.generator = cfg, ndc, device, generator
        pos = train.c2w[:, :3, 3]
        lo, hi = pos.min(0).values, pos.max(0).values
        margin = (hi - lo).clamp_min(1e-3) * cfg.pose_jitter
        # a degenerate box (one camera, or cameras on a line) still gets some extent
        extent = (hi - lo).max().clamp_min(1e-3)
        margin = torch.maximum(margin, torch.full_like(margin, 0.05 * float(extent)))
        self.lo, self.hi = (lo - margin).to(device), (hi + margin).to(device)
        self.target = target.to(device)
        self.up = up.to(device)
        self.width, self.height = train.width, train.height
        self.intr = train.intrinsics.mean(0).to(device)  # (4,) fx fy cx cy
        self.focal_jitter = 0.0

    def poses(self, n: int) -> torch.Tensor:
        """(n, 4, 4) random poses: centres uniform in the (enlarged) box of the training cameras,
        looking at the scene target with a small random offset."""
        u = torch.rand(n, 3, generator=self.generator, device=self.device)
        eye = self.lo + u * (self.hi - self.lo)
        radius = float((self.hi - self.lo).norm()) * 0.1
        tgt = self.target + (torch.rand(n, 3, generator=self.generator, device=self.device) - 0.5) * radius
        return look_at_batch(eye, tgt, self.up)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """origins and directions (P * S * S, 3), patch-major then row-major."""
        c = self.cfg
        s = c.patch_size
        c2w = self.poses(c.n_patches)  # (P, 4, 4)
        u0 = torch.randint(0, self.width - s + 1, (c.n_patches, 1, 1), generator=self.generator, device=self.device)
        v0 = torch.randint(0, self.height - s + 1, (c.n_patches, 1, 1), generator=self.generator, device=self.device)
        g = torch.arange(s, device=self.device)
        v = (v0 + g[None, :, None]).expand(-1, s, s)
        u = (u0 + g[None, None, :]).expand(-1, s, s)
        pose = c2w[:, None, None].expand(-1, s, s, 4, 4)
        fx, fy, cx, cy = (float(x) for x in self.intr)
        o, d = pixel_rays(pose, fx, fy, cx, cy, u, v)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
        return o, d


def scene_target(train: Split, ndc: dict | None, aabb: torch.Tensor) -> torch.Tensor:
    """Where random poses look: the box centre for object scenes; for forward-facing scenes the
    point at the mean viewing direction a typical depth ahead of the average camera."""
    if ndc is None:
        return aabb.mean(0)
    centre = train.c2w[:, :3, 3].mean(0)
    forward = -train.c2w[:, :3, 2].mean(0)
    forward = forward / forward.norm()
    return centre + forward * 4.0  # recentred LLFF scenes: content a few units ahead (near bound ~1.33)


def mean_view_up(train: Split) -> torch.Tensor:
    up = train.c2w[:, :3, 1].mean(0)
    return up / up.norm().clamp_min(1e-9)


def depth_with_far_background(depth: torch.Tensor, acc: torch.Tensor, far: torch.Tensor | float) -> torch.Tensor:
    """Expected depth with the transparent remainder placed at the far bound: sum(w t) + (1 - acc) far.

    Well defined for empty rays (they read ``far``, as mip-NeRF's clipped distance does) and
    smooth in the weights; dividing by a tiny opacity instead turns noise in nearly empty space
    into huge depth differences that the smoothness term then fights by erasing the scene.
    """
    return depth + (1.0 - acc) * far


def log_linear(step: int, total: int, start: float, end: float) -> float:
    f = min(max(step / max(total, 1), 0.0), 1.0)
    return math.exp(math.log(start) * (1 - f) + math.log(end) * f)
