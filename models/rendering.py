"""THE volume renderer: sampling along rays and alpha compositing.

Every backend and every trainer calls these functions; none re-implements compositing.

Quadrature (Max 1995; NeRF eq. 3): for samples i with density sigma_i over an interval of length
delta_i (in world units, i.e. ``dt * |d|``),

    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = prod_{j<i} (1 - alpha_j)            (transmittance before sample i)
    w_i     = T_i * alpha_i
    rgb     = sum_i w_i c_i + (1 - sum_i w_i) * background
    depth   = sum_i w_i t_i          (expected depth, t along the un-normalised ray)
    acc     = sum_i w_i              (opacity)

Two layouts are supported: *dense* (R rays x S samples, used by NeRF's hierarchical sampling and
R2L-free paths) and *packed* (a flat list of samples with a ray index each, sorted by ray then by
t, used by occupancy-grid marching and KiloNeRF).
"""

from __future__ import annotations

import torch

FAR_DELTA = 1e10
"""Length given to the last interval of a dense ray (the reference code's 1e10)."""


# --------------------------------------------------------------------------------------- sampling
def stratified_samples(
    near: torch.Tensor,
    far: torch.Tensor,
    n_samples: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample depths along rays, evenly spaced, jittered within each bin when ``perturb``.

    Args:
        near, far: (R,) per-ray bounds.
    Returns:
        t: (R, n_samples), sorted ascending. Without jitter t_i = near + (far-near) * i/(n-1),
        as in the reference code (first sample at near, last at far).
    """
    steps = torch.linspace(0.0, 1.0, n_samples, device=near.device, dtype=near.dtype)
    t = near[:, None] * (1.0 - steps) + far[:, None] * steps  # (R, S)
    if perturb:
        mids = 0.5 * (t[:, 1:] + t[:, :-1])
        upper = torch.cat([mids, t[:, -1:]], -1)
        lower = torch.cat([t[:, :1], mids], -1)
        u = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)
        t = lower + (upper - lower) * u
    return t


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    deterministic: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant PDF (NeRF hierarchical sampling).

    Args:
        bins: (R, M + 1) bin edges, ascending.
        weights: (R, M) non-negative weights of the bins (need not sum to 1).
        deterministic: if True the samples are at u = linspace(0, 1, n) (test time), else uniform
            random u.
    Returns:
        (R, n_samples) samples, ascending when ``deterministic``.
    """
    weights = weights + 1e-5  # avoid NaNs when all weights are zero (reference code)
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)  # (R, M + 1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n_samples, device=bins.device, dtype=bins.dtype)
        u = u.expand(cdf.shape[0], n_samples).contiguous()
    else:
        u = torch.rand(cdf.shape[0], n_samples, generator=generator, device=bins.device, dtype=bins.dtype)
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bin_lo, bin_hi = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    frac = (u - cdf_lo) / denom
    return bin_lo + frac * (bin_hi - bin_lo)


# ------------------------------------------------------------------------------ dense compositing
def alpha_from_density(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """alpha = 1 - exp(-sigma * delta), elementwise."""
    return 1.0 - torch.exp(-sigma * delta)


def weights_from_alpha(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense compositing weights. alpha: (R, S) -> (weights (R, S), transmittance (R, S)).

    T_i = prod_{j<i}(1 - alpha_j) is computed as exp(cumsum(log(1 - alpha))) shifted by one, with
    the log clamped so fully opaque samples do not produce -inf.
    """
    log_t = torch.cumsum(torch.log((1.0 - alpha).clamp_min(1e-10)), dim=-1)
    trans = torch.exp(torch.cat([torch.zeros_like(log_t[:, :1]), log_t[:, :-1]], dim=-1))
    return trans * alpha, trans


def composite(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    t: torch.Tensor,
    dirs: torch.Tensor,
    background: torch.Tensor | None = None,
    deltas: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Composite dense samples along rays.

    Args:
        sigma: (R, S) densities (already activated, >= 0).
        rgb: (R, S, 3) colours in [0, 1].
        t: (R, S) sample depths, ascending.
        dirs: (R, 3) ray directions (un-normalised); deltas are scaled by their norm.
        background: (3,) or (R, 3) colour behind the scene; None means black (no addition).
        deltas: optional (R, S) interval length of each sample in t units; by default the distance
            to the next sample (the last one infinite), as in the NeRF reference code.
    Returns:
        dict with rgb (R, 3), depth (R,), acc (R,), weights (R, S).
    """
    if deltas is None:
        delta = t[:, 1:] - t[:, :-1]
        delta = torch.cat([delta, torch.full_like(delta[:, :1], FAR_DELTA)], -1)
    else:
        delta = deltas
    delta = delta * dirs.norm(dim=-1, keepdim=True)
    alpha = alpha_from_density(sigma, delta)
    weights, _ = weights_from_alpha(alpha)
    acc = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2)
    if background is not None:
        color = color + (1.0 - acc[:, None]) * background
    depth = (weights * t).sum(-1)
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights}


# ----------------------------------------------------------------------------- packed compositing
def packed_exclusive_cumsum(values: torch.Tensor, ray_ids: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive prefix sum of a flat array sorted by ray (``ray_ids`` non-decreasing).

    values: (P,), ray_ids: (P,) int64 -> (P,). E.g. values [1, 2, 3, 4], ray_ids [0, 0, 1, 1]
    gives [0, 1, 0, 3].
    """
    if values.numel() == 0:
        return values.clone()
    # A global prefix sum minus each ray's starting offset, accumulated in float64 so that
    # millions of samples do not lose the per-ray precision (MPS has no float64: float32 there).
    acc_dtype = torch.float32 if values.device.type == "mps" else torch.float64
    v = values.to(acc_dtype)
    excl = torch.cumsum(v, 0) - v
    # index_add instead of bincount: bincount needs max(ray_ids) on the host (a device sync)
    counts = torch.zeros(n_rays, dtype=torch.long, device=ray_ids.device).index_add_(
        0, ray_ids, torch.ones_like(ray_ids))
    first = (torch.cumsum(counts, 0) - counts).clamp(max=values.numel() - 1)  # first sample per ray
    return (excl - excl[first][ray_ids]).to(values.dtype)


def composite_packed(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_ids: torch.Tensor,
    n_rays: int,
    dir_norms: torch.Tensor,
    background: torch.Tensor | None = None,
    log_trans_init: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Composite a packed list of samples (sorted by ray, then by t).

    Args:
        sigma: (P,) densities; rgb: (P, 3); t_starts, t_ends: (P,) interval ends per sample;
        ray_ids: (P,) int64 ray index in [0, n_rays), non-decreasing.
        dir_norms: (n_rays,) norms of the ray directions (deltas are scaled by them).
        log_trans_init: optional (n_rays,) log transmittance already accumulated before these
            samples (KiloNeRF's multi-pass marching continues rays across passes).
    Returns:
        dict with rgb (n_rays, 3) (background added only when given), depth (n_rays,),
        acc (n_rays,) (the opacity of *these* samples), weights (P,), log_trans (n_rays,) after
        the samples. For a multi-pass renderer, colour/depth/acc add across passes.
    """
    delta = (t_ends - t_starts) * dir_norms[ray_ids]
    sd = (sigma * delta).clamp(max=1e4)  # optical depth; exp(-1e4) is already 0, and no inf - inf
    log_t_before = -packed_exclusive_cumsum(sd, ray_ids, n_rays)
    if log_trans_init is not None:
        log_t_before = log_t_before + log_trans_init[ray_ids]
    alpha = 1.0 - torch.exp(-sd)
    weights = torch.exp(log_t_before) * alpha
    acc = torch.zeros(n_rays, device=sigma.device, dtype=weights.dtype).index_add_(0, ray_ids, weights)
    color = torch.zeros(n_rays, 3, device=sigma.device, dtype=weights.dtype).index_add_(
        0, ray_ids, weights[:, None] * rgb.to(weights.dtype)
    )
    t_mid = 0.5 * (t_starts + t_ends)
    depth = torch.zeros(n_rays, device=sigma.device, dtype=weights.dtype).index_add_(0, ray_ids, weights * t_mid)
    total_sd = torch.zeros(n_rays, device=sigma.device, dtype=sd.dtype).index_add_(0, ray_ids, sd)
    log_trans = -total_sd if log_trans_init is None else log_trans_init - total_sd
    if background is not None:
        color = color + (1.0 - acc[:, None]) * background
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights, "log_trans": log_trans}
