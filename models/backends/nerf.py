"""NeRF backend: coarse + fine MLPs with hierarchical sampling (64 stratified + 128 importance)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.backends.base import BackendUnavailable, RendererBackend, check_shapes
from models.cameras import ray_aabb
from models.fields.nerf_mlp import NerfMLP, NerfMLPConfig
from models.occupancy import OccupancyGrid, OccupiedSegments
from models.rendering import composite, composite_packed, sample_pdf, stratified_samples


@dataclass(frozen=True)
class HierarchicalConfig:
    """Sampling of the NeRF backend (and of the teacher's "hierarchical" training sampler)."""

    n_coarse: int = 64
    """Stratified samples evaluated by the coarse network."""
    n_fine: int = 128
    """Importance samples drawn from the coarse weights; the fine net sees all n_coarse + n_fine."""


def clip_to_box(
    origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor, aabb: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Restrict [near, far] to the scene box. Returns near, far and a hit mask (R,)."""
    if aabb is None:
        return near, far, torch.ones_like(near, dtype=torch.bool)
    t0, t1 = ray_aabb(origins, dirs, aabb)
    n2, f2 = torch.maximum(near, t0), torch.minimum(far, t1)
    hit = f2 > n2
    return torch.where(hit, n2, near), torch.where(hit, f2, far), hit


def masked_field(net: NerfMLP, grid: OccupancyGrid | None, pts: torch.Tensor, dirs: torch.Tensor, raw_noise_std: float = 0.0):
    """Evaluate ``net`` at pts (N, 3) with view dirs (N, 3); zero density in empty voxels."""
    sigma, rgb = net(pts, dirs, raw_noise_std)
    if grid is not None:
        sigma = sigma * grid.query(pts).to(sigma.dtype)
    return sigma, rgb


def render_hierarchical(
    coarse: NerfMLP,
    fine: NerfMLP,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    background: torch.Tensor | None,
    sampling: HierarchicalConfig = HierarchicalConfig(),
    perturb: bool = False,
    grid: OccupancyGrid | None = None,
    raw_noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """NeRF's two-pass render of rays (R, 3). Returns fine rgb/depth/acc and coarse rgb ("rgb_coarse").

    Without a grid this is the reference algorithm: ``n_coarse`` stratified samples in
    [near, far], ``n_fine`` more drawn from the coarse weights, the fine net on all of them.
    With an occupancy grid the same two passes run in *occupied arc length* (see
    ``OccupiedSegments``): the coarse samples are spread over the occupied part of the ray only
    and quadrature intervals never span empty space. Networks fitted with empty-space skipping
    never saw empty space; sampling the whole [near, far] range at 64 points would step over the
    thin, sharp density shells they learn (and query them where they were never constrained).
    """
    if grid is not None:
        return _render_hierarchical_occupied(coarse, fine, origins, dirs, near, far, background, sampling, perturb,
                                             grid, raw_noise_std, generator)
    r = origins.shape[0]
    viewdirs = F.normalize(dirs, dim=-1)
    t_c = stratified_samples(near, far, sampling.n_coarse, perturb, generator)  # (R, Nc)
    pts = origins[:, None] + t_c[..., None] * dirs[:, None]
    vd = viewdirs[:, None].expand_as(pts)
    sig, col = coarse(pts.reshape(-1, 3), vd.reshape(-1, 3), raw_noise_std)
    out_c = composite(sig.reshape(r, -1).float(), col.reshape(r, -1, 3).float(), t_c, dirs, background)

    mids = 0.5 * (t_c[:, 1:] + t_c[:, :-1])
    t_f = sample_pdf(mids, out_c["weights"][:, 1:-1].detach(), sampling.n_fine, deterministic=not perturb, generator=generator)
    t_all, _ = torch.sort(torch.cat([t_c, t_f.detach()], -1), -1)
    pts = origins[:, None] + t_all[..., None] * dirs[:, None]
    vd = viewdirs[:, None].expand_as(pts)
    sig, col = fine(pts.reshape(-1, 3), vd.reshape(-1, 3), raw_noise_std)
    out_f = composite(sig.reshape(r, -1).float(), col.reshape(r, -1, 3).float(), t_all, dirs, background)
    return {"rgb": out_f["rgb"], "depth": out_f["depth"], "acc": out_f["acc"], "rgb_coarse": out_c["rgb"],
            "weights": out_f["weights"], "t": t_all}


def _partition_deltas(s: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Interval lengths of sorted samples s (R, K) partitioning [0, length]: midpoint to midpoint."""
    mids = 0.5 * (s[:, 1:] + s[:, :-1])
    lower = torch.cat([torch.zeros_like(s[:, :1]), mids], -1)
    upper = torch.cat([mids, length[:, None].expand(-1, 1)], -1)
    return (upper - lower).clamp_min(0.0)


def _render_hierarchical_occupied(coarse, fine, origins, dirs, near, far, background, sampling, perturb, grid,
                                  raw_noise_std, generator):
    r = origins.shape[0]
    seg = OccupiedSegments(grid, origins, dirs, near, far)
    length = seg.length  # (R,)
    nc = sampling.n_coarse
    k = torch.arange(nc, device=origins.device, dtype=torch.float32)
    off = torch.rand(r, nc, generator=generator, device=origins.device) if perturb else 0.5
    s_c = (k[None] + off) / nc * length[:, None]  # (R, Nc) uniform over occupied length
    t_c = seg.to_t(s_c)
    viewdirs = F.normalize(dirs, dim=-1)
    pts = origins[:, None] + t_c[..., None] * dirs[:, None]
    vd = viewdirs[:, None].expand_as(pts)
    sig, col = masked_field(coarse, grid, pts.reshape(-1, 3), vd.reshape(-1, 3), raw_noise_std)
    delta_c = (length / nc)[:, None].expand(-1, nc)
    out_c = composite(sig.reshape(r, -1).float(), col.reshape(r, -1, 3).float(), t_c, dirs, background, delta_c)

    edges = torch.arange(nc + 1, device=origins.device, dtype=torch.float32)[None] / nc * length[:, None]
    s_f = sample_pdf(edges, out_c["weights"].detach(), sampling.n_fine, deterministic=not perturb, generator=generator)
    s_all, _ = torch.sort(torch.cat([s_c, s_f.detach()], -1), -1)
    t_all = seg.to_t(s_all)
    pts = origins[:, None] + t_all[..., None] * dirs[:, None]
    vd = viewdirs[:, None].expand_as(pts)
    sig, col = masked_field(fine, grid, pts.reshape(-1, 3), vd.reshape(-1, 3), raw_noise_std)
    out_f = composite(sig.reshape(r, -1).float(), col.reshape(r, -1, 3).float(), t_all, dirs, background,
                      _partition_deltas(s_all, length))
    return {"rgb": out_f["rgb"], "depth": out_f["depth"], "acc": out_f["acc"], "rgb_coarse": out_c["rgb"],
            "weights": out_f["weights"], "t": t_all}


class NerfBackend(RendererBackend):
    """The NeRF teacher as a renderer: 64 coarse + 128 fine samples per ray."""

    name = "nerf"
    label = "NeRF"
    ACCEL_CHOICES = ("auto", "torch")
    """One execution path: PyTorch ops (fp16 autocast on CUDA, float32 elsewhere); "auto" is "torch"."""

    def __init__(self, device=None, sampling: HierarchicalConfig = HierarchicalConfig(), accel: str = "auto"):
        super().__init__(device, accel)
        self.sampling = sampling
        self.config = NerfMLPConfig()
        self.coarse = NerfMLP(self.config).to(self.device).eval()
        self.fine = NerfMLP(self.config).to(self.device).eval()
        self.grid: OccupancyGrid | None = None
        self.aabb: torch.Tensor | None = None

    def modules(self):
        return [self.coarse, self.fine]

    def to(self, device):
        super().to(device)
        if self.grid is not None:
            self.grid.to(self.device)
        if self.aabb is not None:
            self.aabb = self.aabb.to(self.device)
        return self

    def load(self, scene) -> None:
        tensors, config = self.scene_weights(scene)
        self.ndc = scene.ndc
        self.aabb = scene.aabb_tensor.to(self.device) if scene.ndc is None else None
        grid = scene.load_occupancy(self.device)
        self.grid = OccupancyGrid.from_tensor(scene.aabb_tensor.to(self.device), grid) if grid is not None else None
        self.load_state_dict(tensors, config)

    def load_state_dict(self, state, config=None) -> None:
        try:
            cfg = NerfMLPConfig.from_dict(config["mlp"]) if config and "mlp" in config else self.config
            check_shapes(lambda: NerfMLP(cfg), state, "NeRF", "fine.")
            if cfg != self.config:
                coarse, fine = NerfMLP(cfg).to(self.device).eval(), NerfMLP(cfg).to(self.device).eval()
                self.config, self.coarse, self.fine = cfg, coarse, fine
        except (TypeError, ValueError, AttributeError) as e:
            raise BackendUnavailable(f"NeRF network settings in the manifest are invalid ({e})") from None
        if "occupancy.occupied" in state and self.aabb is not None:
            self.grid = OccupancyGrid.from_tensor(self.aabb, state["occupancy.occupied"].to(self.device))
        coarse = {k[len("coarse."):]: v for k, v in state.items() if k.startswith("coarse.")}
        fine = {k[len("fine."):]: v for k, v in state.items() if k.startswith("fine.")}
        try:
            self.coarse.load_state_dict(coarse)
            self.fine.load_state_dict(fine)
        except RuntimeError as e:
            raise BackendUnavailable(f"NeRF weights do not match the network shape: {str(e).splitlines()[0]}") from None
        if "sampling" in (config or {}):
            self.sampling = HierarchicalConfig(**config["sampling"])

    def flops_per_sample(self) -> float:
        return self.fine.flops_per_sample()

    def bytes_per_ray(self) -> int:
        # activations of all evaluations plus the occupied-segment march (up to ~512 steps of 16 bytes)
        return (2 * self.sampling.n_coarse + self.sampling.n_fine) * self.config.width * 4 * 4 + 512 * 16

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        near, far, hit = clip_to_box(origins, dirs, near, far, self.aabb)
        ctx = torch.autocast("cuda", dtype=torch.float16) if half and self.device.type == "cuda" else nullcontext()
        with ctx:
            out = render_hierarchical(self.coarse, self.fine, origins, dirs, near, far, background,
                                      self.sampling, perturb=False, grid=self.grid)
        rgb = torch.where(hit[:, None], out["rgb"], background.expand_as(out["rgb"]))
        # network evaluations per ray: coarse on n_coarse, fine on n_coarse + n_fine
        n = 2 * self.sampling.n_coarse + self.sampling.n_fine
        return {"rgb": rgb, "depth": torch.where(hit, out["depth"], torch.zeros_like(out["depth"])),
                "acc": torch.where(hit, out["acc"], torch.zeros_like(out["acc"])),
                "samples": torch.full_like(near, float(n))}


@torch.no_grad()
def render_marched(
    fine: NerfMLP,
    grid: OccupancyGrid,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    step_size: float,
    background: torch.Tensor,
    samples_per_pass: int = 32,
    min_transmittance: float = 1e-4,
) -> dict[str, torch.Tensor]:
    """The teacher as it was trained: the fine net at the midpoints of the occupied marching steps
    (``OccupancyGrid.march``, no jitter), with early ray termination.

    Rays advance in passes of ``samples_per_pass`` occupied samples; a ray stops once its
    transmittance falls below ``min_transmittance`` (its remaining samples could change its colour
    by at most that much) or it has no samples left, so an opaque surface costs a pass or two
    instead of every occupied step behind it. Evaluations run under fp16 autocast on CUDA.

    Args:
        origins, dirs: (R, 3); near, far: (R,); background: (3,).
    Returns:
        rgb (R, 3), acc (R,), samples (R,) network evaluations per ray.
    """
    n = origins.shape[0]
    dev = origins.device
    ray_ids, t0, t1 = grid.march(origins, dirs, near, far, step_size)  # sorted by ray, then t
    rank = torch.arange(ray_ids.numel(), device=dev)
    if ray_ids.numel():  # position of each sample among its ray's samples
        first = torch.zeros(n, dtype=torch.long, device=dev).index_add_(0, ray_ids, torch.ones_like(ray_ids))
        first = torch.cumsum(first, 0) - first
        rank = rank - first[ray_ids]
    dnorm = dirs.norm(dim=-1)
    viewdirs = F.normalize(dirs, dim=-1)
    log_t = torch.zeros(n, device=dev)
    rgb = torch.zeros(n, 3, device=dev)
    samples = torch.zeros(n, device=dev)
    ctx = torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else nullcontext()
    log_min = torch.log(torch.tensor(min_transmittance))
    start = 0
    while True:
        take = (rank >= start) & (rank < start + samples_per_pass) & (log_t[ray_ids] > log_min)
        idx = torch.nonzero(take).squeeze(1)  # the pass's one host sync
        if idx.numel() == 0:
            break
        rid, a, b = ray_ids[idx], t0[idx], t1[idx]
        pts = origins[rid] + (0.5 * (a + b))[:, None] * dirs[rid]
        with ctx:
            sig, col = fine(pts, viewdirs[rid])
        out = composite_packed(sig.float(), col.float(), a, b, rid, n, dnorm, None, log_trans_init=log_t)
        rgb += out["rgb"]
        log_t = out["log_trans"]
        samples.index_add_(0, rid, torch.ones_like(a))
        start += samples_per_pass
    trans = torch.exp(log_t)
    return {"rgb": (rgb + trans[:, None] * background).clamp(0, 1), "acc": 1.0 - trans, "samples": samples}
