"""KiloNeRF backend: a grid of tiny MLPs rendered with empty-space skipping and early ray termination.

Rendering (``render_passes``) follows the paper's fast renderer, in PyTorch ops:

* every ray samples one fixed lattice, ``t_i = t0 + (i + 1/2) dt`` with ``dt = step / |d|`` from
  its entry ``t0`` into the grid box; samples are kept only in occupied voxels of the ESS grid.
  This is exactly ``OccupancyGrid.march`` (used by fine-tuning), so training and rendering see
  the same samples;
* rays are processed in *passes*. Each pass, for every active ray: (1) a few empty-space jumps
  along a Chebyshev distance field of the occupancy grid (a voxel at distance k from the nearest
  occupied voxel lets the ray move (k-1) voxels without missing an occupied lattice sample),
  (2) a window of ``W`` lattice positions is tested against the grid and the first ``S``
  occupied ones become this pass's samples (paper: up to 8 per pass), (3) the samples of all rays
  are grouped by network and evaluated with batched matmuls (``KiloNerfGrid.evaluate``),
  (4) ``composite_packed`` continues each ray's transmittance from the previous pass
  (``log_trans_init``), (5) rays whose transmittance fell below the ERT threshold (0.01) or that
  left the box retire, and the active set is compacted;
* ``S`` grows geometrically after the first pass (the few rays left after the first passes
  are cheap, while every pass costs a fixed number of kernel launches and host syncs).

Work per frame: mean samples per ray x 12,160 FLOPs (``flops_per_sample``) plus the lookups.
Host syncs per pass: the sample compaction, the tile count, the packed compositing's bincount
and the ray compaction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from models.backends.base import BackendUnavailable, RendererBackend
from models.cameras import ray_aabb
from models.fields.kilonerf_grid import KiloNerfFieldConfig, KiloNerfGrid, PackedWeights
from models.occupancy import OccupancyGrid
from models.rendering import composite_packed


@dataclass(frozen=True)
class KiloNerfRenderConfig:
    """How the KiloNeRF backend marches rays (stored with the weights in the scene)."""

    step_size: float = 0.01
    """Lattice step along rays in world units (the distillation job derives it from the grid box)."""
    ert_threshold: float = 0.01
    """Early ray termination: a ray stops after the pass in which its transmittance fell below this (0: off)."""
    samples_per_pass: int = 8
    """Occupied samples per ray in the first pass (the paper's renderer: 8)."""
    pass_growth: float = 2.0
    """Samples per pass grow by this factor each pass (1: constant)."""
    max_samples_per_pass: int = 64
    """Cap of the growing samples per pass."""
    window: int = 32
    """Lattice positions tested against the occupancy grid per ray and pass (at least 2 x samples)."""
    jumps_per_pass: int = 3
    """Distance-field jumps through empty space before each pass's window."""
    distance_cap: int = 32
    """Largest Chebyshev distance (voxels) stored in the empty-space distance field."""

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "KiloNerfRenderConfig":
        names = {f.name for f in fields(KiloNerfRenderConfig)}
        return KiloNerfRenderConfig(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------------------------ ESS grid
def empty_space_distance(occupied: torch.Tensor, cap: int = 32) -> torch.Tensor:
    """Chebyshev distance (in voxels) from each voxel to the nearest occupied voxel, capped.

    occupied: (X, Y, Z) bool -> (X, Y, Z) uint8; 0 on occupied voxels, k >= 1 where all voxels
    within k - 1 rings are empty (voxels farther than ``cap`` get ``cap``). Computed by repeated
    separable 3-voxel max-pool dilations (3 cheap passes per ring).
    """
    cap = int(min(max(cap, 1), 255))
    dist = torch.full(occupied.shape, cap, dtype=torch.uint8, device=occupied.device)
    cur = occupied[None, None].to(torch.float16 if occupied.is_cuda else torch.float32)
    dist[occupied] = 0
    for k in range(1, cap):
        prev = cur
        cur = F.max_pool3d(cur, (3, 1, 1), stride=1, padding=(1, 0, 0))
        cur = F.max_pool3d(cur, (1, 3, 1), stride=1, padding=(0, 1, 0))
        cur = F.max_pool3d(cur, (1, 1, 3), stride=1, padding=(0, 0, 1))
        ring = (cur > 0) & ~(prev > 0)
        dist[ring[0, 0]] = k
        if bool((cur > 0).all()):
            break
    return dist


class EssGrid:
    """The occupancy grid used for empty-space skipping plus its distance field."""

    def __init__(self, aabb: torch.Tensor, occupied: torch.Tensor, distance: torch.Tensor | None = None,
                 cap: int = 32):
        self.grid = OccupancyGrid.from_tensor(aabb, occupied.bool())
        self.distance = (distance.to(self.grid.device, torch.uint8) if distance is not None
                         else empty_space_distance(self.grid.occupied, cap))
        self.flat = self.distance.reshape(-1)
        res = self.grid.resolution
        self.strides = torch.tensor([res[1] * res[2], res[2], 1], device=self.grid.device)

    @property
    def aabb(self) -> torch.Tensor:
        return self.grid.aabb

    @property
    def resolution(self) -> tuple[int, int, int]:
        return self.grid.resolution

    def to(self, device) -> "EssGrid":
        self.grid.to(device)
        self.distance = self.distance.to(device)
        self.flat = self.distance.reshape(-1)
        self.strides = self.strides.to(device)
        return self

    def lookup(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (..., 3) -> distance (...) uint8 of the (clamped) voxel, inside-box mask (...).

        Uses ``OccupancyGrid.voxel_index``, so "occupied" agrees with ``grid.query``/``grid.march``.
        """
        shape = points.shape[:-1]
        idx, inside = self.grid.voxel_index(points.reshape(-1, 3))
        dist = self.flat[(idx * self.strides).sum(-1)]
        return dist.reshape(shape), inside.reshape(shape)


# ------------------------------------------------------------------------------------ marching
def jump_lengths(dirs: torch.Tensor, voxel_size: torch.Tensor) -> torch.Tensor:
    """World length a ray (R, 3) can travel while moving at most one voxel along every axis."""
    u = F.normalize(dirs, dim=-1).abs().clamp_min(1e-9)
    return (voxel_size / u).amin(-1)


@torch.no_grad()
def render_passes(
    field: KiloNerfGrid,
    ess: EssGrid,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    background: torch.Tensor | None,
    config: KiloNerfRenderConfig,
    packed: PackedWeights | None = None,
) -> dict[str, torch.Tensor]:
    """Render rays (R, 3) with ESS + ERT in passes (see the module docstring).

    Returns rgb (R, 3) (over ``background`` when given), depth (R,), acc (R,), samples (R,)
    (network evaluations per ray), trans (R,) (final transmittance) and passes (0-d).
    """
    c = config
    dev = origins.device
    r = origins.shape[0]
    rgb_acc = torch.zeros(r, 3, device=dev)
    depth_acc = torch.zeros(r, device=dev)
    acc_acc = torch.zeros(r, device=dev)
    samples = torch.zeros(r, device=dev)
    log_trans = torch.zeros(r, device=dev)
    step = float(c.step_size)
    log_thr = math.log(c.ert_threshold) if c.ert_threshold > 0 else -math.inf

    t0, t1 = ray_aabb(origins, dirs, ess.aabb)
    t0 = torch.maximum(t0, near)
    t1 = torch.minimum(t1, far)
    dnorm = dirs.norm(dim=-1)
    dt = step / dnorm.clamp_min(1e-9)
    first_ok = t0 + 0.5 * dt < t1  # at least one lattice sample inside
    act = torch.nonzero(first_ok).squeeze(1)
    # per active ray state (compacted every pass)
    o, d, a_t0, a_t1, a_dt = origins[act], dirs[act], t0[act], t1[act], dt[act]
    vd = F.normalize(d, dim=-1)
    jlen = jump_lengths(d, ess.grid.voxel_size)
    lt = torch.zeros(act.numel(), device=dev)
    i = torch.zeros(act.numel(), device=dev)
    n_pass = 0
    while act.numel() > 0:
        s_pass = int(min(c.max_samples_per_pass, round(c.samples_per_pass * c.pass_growth ** n_pass)))
        s_pass = max(s_pass, 1)
        w = max(c.window, 2 * s_pass)
        n_pass += 1
        # (1) jumps through empty space: from lattice sample i in an empty voxel at distance k,
        # samples i .. i + ceil((k-1) * jlen / step) - 1 are all in empty voxels
        for _ in range(c.jumps_per_pass):
            t = a_t0 + (i + 0.5) * a_dt
            k, _ = ess.lookup(o + t[:, None] * d)
            k = k.float()
            adv = torch.ceil((k - 1.0).clamp_min(0) * jlen / step * (1.0 - 1e-4)).clamp_min(1.0)
            i = i + torch.where(k > 0, adv, torch.zeros_like(adv))
        # (2) the window: first s_pass occupied lattice positions among the next w
        ar = torch.arange(w, device=dev, dtype=torch.float32)
        idx = i[:, None] + ar  # (A, w)
        t_mid = a_t0[:, None] + (idx + 0.5) * a_dt[:, None]
        valid = t_mid < a_t1[:, None]
        pts = o[:, None, :] + t_mid[..., None] * d[:, None, :]
        k, inside = ess.lookup(pts)
        occ = (k == 0) & inside & valid
        cum = torch.cumsum(occ.to(torch.int32), 1)
        take = occ & (cum <= s_pass)
        found = cum[:, -1]
        last = (take.to(torch.float32) * (ar + 1.0)).amax(1)
        i = i + torch.where(found >= s_pass, last, torch.full_like(last, float(w)))
        rows, cols = torch.nonzero(take, as_tuple=True)  # sorted by ray, then by t
        if rows.numel() > 0:
            # (3) evaluate all samples of the pass, grouped by network
            p = pts[rows, cols]
            tm = t_mid[rows, cols]
            net, local = field.locate(p)
            sigma, col = field.evaluate(local, vd[rows], net, packed)
            # (4) composite, continuing each ray's transmittance
            half_dt = 0.5 * a_dt[rows]
            out = composite_packed(sigma, col, tm - half_dt, tm + half_dt, rows, act.numel(), dnorm[act],
                                   None, log_trans_init=lt)
            rgb_acc.index_add_(0, act, out["rgb"])
            depth_acc.index_add_(0, act, out["depth"])
            acc_acc.index_add_(0, act, out["acc"])
            lt = out["log_trans"]
            samples.index_add_(0, act, found.clamp_max(s_pass).to(samples.dtype))
        # (5) retire terminated / finished rays, compact the rest
        alive = (a_t0 + (i + 0.5) * a_dt < a_t1) & (lt > log_thr)
        log_trans.index_copy_(0, act, lt)
        keep = torch.nonzero(alive).squeeze(1)
        act, o, d, vd, jlen = act[keep], o[keep], d[keep], vd[keep], jlen[keep]
        a_t0, a_t1, a_dt, lt, i = a_t0[keep], a_t1[keep], a_dt[keep], lt[keep], i[keep]
    rgb = rgb_acc if background is None else rgb_acc + (1.0 - acc_acc[:, None]) * background
    return {"rgb": rgb, "depth": depth_acc, "acc": acc_acc, "samples": samples,
            "trans": torch.exp(log_trans), "passes": torch.tensor(n_pass)}


# ------------------------------------------------------------------------------------- backend
class KiloNerfBackend(RendererBackend):
    """Thousands of tiny MLPs with ESS + ERT (Reiser et al. 2021)."""

    name = "kilonerf"
    label = "KiloNeRF"

    def __init__(self, device=None):
        super().__init__(device)
        self.field: KiloNerfGrid | None = None
        self.ess: EssGrid | None = None
        self.render_config = KiloNerfRenderConfig()
        self._packed: dict[torch.dtype, PackedWeights] = {}
        self.last_passes = 0

    def modules(self):
        return [self.field] if self.field is not None else []

    def to(self, device):
        super().to(device)
        if self.ess is not None:
            self.ess.to(self.device)
        self._packed.clear()
        return self

    # -------------------------------------------------------------------------------- loading
    def load(self, scene) -> None:
        from models.scene import SceneError

        try:
            tensors, config = scene.load_model(self.name, self.device)
        except SceneError as e:
            raise BackendUnavailable(str(e)) from None
        self.ndc = scene.ndc
        self.load_state_dict(tensors, config)

    def load_state_dict(self, state, config=None) -> None:
        config = config or {}
        try:
            fcfg = KiloNerfFieldConfig.from_dict(config["field"]) if "field" in config else KiloNerfFieldConfig()
            rcfg = KiloNerfRenderConfig.from_dict(config["render"]) if "render" in config else self.render_config
            aabb = state["field.aabb"].to(self.device).float()
            field = KiloNerfGrid(aabb, state["field.cell_to_net"].to(self.device), fcfg).to(self.device)
            field.load_state_dict({k[len("field."):]: v.to(self.device) for k, v in state.items()
                                   if k.startswith("field.")})
            occupied = state["ess.occupied"].to(self.device).bool()
            distance = state.get("ess.distance")
            ess = EssGrid(aabb, occupied, distance.to(self.device) if distance is not None else None,
                          rcfg.distance_cap)
        except (KeyError, RuntimeError, ValueError) as e:
            raise BackendUnavailable(f"KiloNeRF weights unusable: {str(e).splitlines()[0]}") from None
        self.field, self.ess, self.render_config = field.eval(), ess, rcfg
        self._packed.clear()

    def set_field(self, field: KiloNerfGrid, ess: EssGrid, render_config: KiloNerfRenderConfig) -> None:
        """Share a (training) field and grid without copying (validation, tests)."""
        self.field, self.ess, self.render_config = field, ess, render_config
        self._packed.clear()

    def invalidate(self) -> None:
        """Call after the field's weights changed in place (cached packed copies are dropped)."""
        self._packed.clear()

    def packed(self, dtype: torch.dtype) -> PackedWeights:
        if dtype not in self._packed:
            self._packed[dtype] = self.field.pack(dtype)
        return self._packed[dtype]

    # ------------------------------------------------------------------------------ rendering
    def flops_per_sample(self) -> float:
        return self.field.flops_per_sample() if self.field is not None else KiloNerfFieldConfig().flops_per_sample()

    def bytes_per_ray(self) -> int:
        c = self.render_config
        window = max(c.window, 2 * c.samples_per_pass) * 48  # positions, indices, masks
        samples = c.samples_per_pass * 1200  # encodings (fp32 + fp16), activations, tiles
        return window + samples + 256

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        if self.field is None or self.ess is None:
            raise BackendUnavailable("KiloNeRF backend has no weights loaded")
        dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        out = render_passes(self.field, self.ess, origins, dirs, near, far, background, self.render_config,
                            self.packed(dtype))
        self.last_passes = int(out["passes"])
        return {"rgb": out["rgb"], "depth": out["depth"], "acc": out["acc"], "samples": out["samples"]}
