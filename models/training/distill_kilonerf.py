"""KiloNeRF from a trained NeRF teacher: occupancy grid -> distillation -> fine-tuning, one job.

Pipeline (Reiser et al. 2021, the repository's train.sh), as one resumable ``TrainingJob``:

1. **Occupancy grid** (first step, or restored from the checkpoint): the teacher's density
   (fine net, masked by the teacher's own occupancy grid exactly as the NeRF backend renders it)
   is sampled on a coarse grid over the scene box to find the tight bounds of the content; the
   network grid covers those bounds with cubic cells, ``grid_resolution`` along the longest axis;
   the ESS grid has ``occupancy_factor`` voxels per cell and axis, a voxel occupied when any of
   3x3x3 teacher samples in it has density above ``occupancy_threshold`` (paper: sigma > 10).
   Cells without an occupied voxel get no network.
2. **Distillation** (``distill_fraction`` of the steps): every network regresses the teacher's
   colour and alpha = 1 - exp(-sigma * delta) at random points of its slightly enlarged cell,
   seen from random directions; all networks train in parallel as one batched model. Teacher
   samples live in a per-network pool that is partly refreshed every step (the teacher costs
   ~100x the student per sample, so each teacher sample is reused ``batch / refresh`` times;
   the paper precomputes 1M points per network and trains 19 epochs on them).
3. **Fine-tuning** (the rest): photometric MSE on random training rays rendered through the ESS
   grid (``OccupancyGrid.march`` on the KiloNeRF lattice + ``composite_packed``, the same samples
   and compositing as the renderer without ERT), plus ``l2_weight`` x the squared weights of the
   two view-dependent layers (paper: 1e-6).

The result (weights, cell -> network map, ESS grid and its distance field) goes into the scene
folder as ``kilonerf.safetensors``; the teacher's ``occupancy.safetensors`` stays untouched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.backends.base import RenderRequest
from models.backends.kilonerf import KiloNerfBackend, KiloNerfRenderConfig
from models.backends.nerf import NerfBackend, masked_field
from models.cameras import Camera
from models.data import SceneData
from models.evaluation import validate_views, validation_indices
from models.fields.kilonerf_grid import KiloNerfFieldConfig, KiloNerfGrid
from models.occupancy import EssGrid, OccupancyGrid
from models.rendering import alpha_from_density, composite_packed
from models.scene import Scene
from models.training.configs import JobConfig, ScheduleConfig
from models.training.engine import (
    TimeBudget,
    TrainingError,
    TrainingJob,
    Validation,
    load_optimizer_tensors,
    optimizer_tensors,
    strip_prefix,
)
from models.training.teacher import RayBatcher


@dataclass(frozen=True)
class KiloNerfConfig(JobConfig):
    """KiloNeRF distillation + fine-tuning (one job)."""

    steps: int = 60000
    """Total optimisation steps of the job: distillation steps, then fine-tuning steps."""
    distill_fraction: float = 0.375
    """Share of ``steps`` (and of ``time_budget_s``) spent on distillation; the rest fine-tunes."""
    time_budget_s: float = 0.0
    """Wall-clock budget of the whole job in seconds (0: none). Distillation stops at its step
    count or after ``distill_fraction`` of the budget, fine-tuning at its step count or when the
    budget is spent; steps left over are dropped (the progress total shrinks). Learning rates
    decay by steps or by time, whichever is further along."""
    field: KiloNerfFieldConfig = dataclasses.field(default_factory=KiloNerfFieldConfig)
    """Shape of every tiny network (paper: 32 wide, PE 10/4, 6,212 parameters)."""
    grid_resolution: int = 16
    """Network cells along the longest axis of the content's bounds (paper: 16, lego 9x16x10)."""
    occupancy_factor: int = 16
    """ESS voxels per network cell and axis (paper: 16, lego 144x256x160)."""
    occupancy_threshold: float = 10.0
    """A voxel is occupied when any teacher sample in it has density above this (paper: 10)."""
    occupancy_samples: int = 3
    """Teacher samples per voxel and axis when building the grid (paper: 3, i.e. 27 per voxel)."""
    bounds_resolution: int = 128
    """Voxels along the longest axis of the scene box for finding the content's tight bounds
    (0: the network grid spans the whole scene box)."""
    cell_margin: float = 0.05
    """Distillation points are drawn from each cell enlarged by this fraction of its size per side."""
    distill_batch: int = 256
    """Points per network per distillation step (paper: 128)."""
    distill_pool: int = 8192
    """Teacher samples kept per network."""
    distill_refresh: int = 64
    """Pool entries per network replaced by fresh teacher samples every distillation step."""
    distill_lr: float = 1e-3
    """Initial Adam learning rate of the distillation (paper: 1e-3)."""
    distill_lr_final: float = 1e-4
    """Learning rate at the end of the distillation (exponential decay)."""
    alpha_step_fraction: float = 1.0 / 140.0
    """delta of the alpha loss as a fraction of the grid box diagonal (paper: 0.0211 on lego,
    whose box diagonal is about 2.95)."""
    render_step_fraction: float = 1.0 / 300.0
    """Marching step of fine-tuning and rendering as a fraction of the grid box diagonal (paper's
    fine-tuning: 384 samples over lego's near-far range of 4, i.e. 0.0104)."""
    render: KiloNerfRenderConfig = dataclasses.field(default_factory=KiloNerfRenderConfig)
    """Renderer settings saved with the model (its step_size is set from ``render_step_fraction``)."""
    finetune_rays: int = 8192
    """Rays per fine-tuning step (paper: 8192)."""
    finetune_lr: float = 1e-3
    """Initial Adam learning rate of the fine-tuning (paper: 1e-3)."""
    finetune_lr_final: float = 1e-4
    """Learning rate at the end of the fine-tuning (exponential decay)."""
    l2_weight: float = 1e-6
    """L2 regularisation of the weights of the two view-dependent layers (paper: 1e-6)."""
    mixed_precision: bool = True
    """fp16 autocast + grad scaling on CUDA (ignored on CPU)."""
    schedule: ScheduleConfig = dataclasses.field(default_factory=lambda: ScheduleConfig(validate_every=2000))
    """Validation, checkpoint and live-preview intervals, and the seed of sampling and initialisation."""


PRESETS: dict[str, KiloNerfConfig] = {
    # CPU tests: a 6-cell grid, 2x2x2 occupancy samples, 1500 steps (~12 s on 2 idle cores for
    # the procedural scene)
    "tiny": KiloNerfConfig(
        steps=1500, distill_fraction=0.5, grid_resolution=6, occupancy_factor=6, occupancy_samples=2,
        bounds_resolution=24,
        distill_batch=64, distill_pool=1024, distill_refresh=16, distill_lr=5e-3, distill_lr_final=1e-3,
        render_step_fraction=1.0 / 150.0, finetune_rays=256, finetune_lr=2e-3, finetune_lr_final=5e-4,
        schedule=ScheduleConfig(validate_every=750, validation_size=48, validation_views=2, checkpoint_every_s=10.0,
                                snapshot_every_s=1.0),
    ),
    # a few minutes on a GPU; a rough model
    "quick": KiloNerfConfig(
        steps=40000, distill_fraction=0.4, time_budget_s=240.0, distill_lr=2e-3, finetune_rays=4096,
        schedule=ScheduleConfig(validate_every=2000),
    ),
    # the recommended recipe, designed for <= 9 minutes on an H100 at lego 400x400: ~2.8 min of
    # distillation and ~4.7 min of fine-tuning. The 450 s budget is what normally ends each phase
    # (estimated 2-4 ms per distillation step and 8-12 ms per fine-tuning step on an H100, i.e.
    # ~50k + ~25k steps); the step counts are upper bounds for faster GPUs.
    "standard": KiloNerfConfig(
        steps=150000, distill_fraction=0.375, time_budget_s=450.0, distill_lr=2e-3, distill_pool=16384,
        schedule=ScheduleConfig(validate_every=5000),
    ),
    # The standard recipe over 20 minutes (the step count is only a cap).
    "long": KiloNerfConfig(
        steps=400000, distill_fraction=0.375, time_budget_s=1200.0, distill_lr=2e-3, distill_pool=16384,
        schedule=ScheduleConfig(validate_every=10000),
    ),
    # The paper's recipe (cfgs/paper/{distill,finetune}): 150k distillation steps of 128 points per
    # network from 1M teacher samples per network, then 1M fine-tuning steps of 8192 rays (lr 1e-3
    # decaying 10x per 500k steps, L2 1e-6). Estimated on one H100 with this implementation: ~15 min
    # of distillation (teacher-bound: ~1.5e9 teacher samples) plus ~2.5 h of fine-tuning at
    # ~8 ms/step; the paper reports 31.00 vs 31.01 dB (student vs teacher) on Synthetic-NeRF.
    "paper": KiloNerfConfig(
        steps=1_150_000, distill_fraction=150_000 / 1_150_000, distill_batch=128, distill_pool=16384,
        distill_refresh=8, distill_lr=1e-3, distill_lr_final=1e-3, finetune_lr=1e-3,
        finetune_lr_final=1e-3 * 0.1 ** (1_000_000 / 500_000),
        schedule=ScheduleConfig(validate_every=50000, checkpoint_every_s=600.0),
    ),
}


# ------------------------------------------------------------------------------------ geometry
def proportional_resolution(extent: torch.Tensor, longest: int) -> tuple[int, int, int]:
    """Cells per axis: ``longest`` along the longest axis, the others proportional (at least 1)."""
    e = extent / extent.max()
    return tuple(max(1, int(round(float(x) * longest))) for x in e)


def tight_bounds(density_fn, aabb: torch.Tensor, resolution: int, threshold: float, samples: int,
                 chunk: int) -> torch.Tensor:
    """(2, 3) bounds of the voxels of a coarse grid over ``aabb`` holding density > threshold,
    grown by one voxel per side and clipped to ``aabb``."""
    res = proportional_resolution(aabb[1] - aabb[0], resolution)
    g = OccupancyGrid(aabb, res, aabb.device).build_from_density(density_fn, threshold, samples, chunk)
    if not bool(g.occupied.any()):
        raise TrainingError(
            f"the teacher has no density above {threshold} anywhere in the scene box: nothing to distil "
            "(is the teacher trained? try a lower occupancy_threshold)")
    idx = torch.nonzero(g.occupied)
    r = torch.tensor(res, device=aabb.device)
    lo = (idx.amin(0) - 1).clamp_min(0)
    hi = torch.minimum(idx.amax(0) + 2, r)
    vs = g.voxel_size
    return torch.stack([aabb[0] + lo * vs, aabb[0] + hi * vs])


def network_grid_box(bounds: torch.Tensor, longest: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A box around ``bounds`` made of cubic cells, ``longest`` along the longest axis."""
    ext = bounds[1] - bounds[0]
    cs = float(ext.max()) / longest
    res = tuple(max(1, int(math.ceil(float(e) / cs - 1e-4))) for e in ext)
    centre = bounds.mean(0)
    half = torch.tensor(res, dtype=torch.float32, device=bounds.device) * cs / 2
    return torch.stack([centre - half, centre + half]), res


def cell_network_map(occupied: torch.Tensor, cell_res: tuple[int, int, int], factor: int) -> torch.Tensor:
    """(nx, ny, nz) network index of cells holding an occupied voxel (numbered in raster order), else -1."""
    nx, ny, nz = cell_res
    cells = occupied.reshape(nx, factor, ny, factor, nz, factor).any(5).any(3).any(1)
    out = torch.full(cell_res, -1, dtype=torch.int32, device=occupied.device)
    out[cells] = torch.arange(int(cells.sum()), dtype=torch.int32, device=occupied.device)
    return out


# ------------------------------------------------------------------------------------------ job
class KiloNerfDistillJob(TimeBudget, TrainingJob):
    """Occupancy grid + distillation + fine-tuning of a KiloNeRF from the scene's NeRF teacher.

    Under a time budget the engine reports progress and ETA by the job's own clock (``elapsed``:
    both phases, resumed runs included), so a resumed job's ETA and bar continue where they were.
    """

    stage = "kilonerf"

    def __init__(self, scene: Scene, data: SceneData, config: KiloNerfConfig, device: torch.device):
        self.scene, self.data, self.config, self.device = scene, data, config, torch.device(device)
        c = config
        if c.steps < 1:
            raise ValueError("kilonerf: steps must be at least 1")
        if not 0.0 <= c.distill_fraction <= 1.0:
            raise ValueError("kilonerf: distill_fraction must be within [0, 1]")
        self.total_steps = c.steps
        self.distill_steps = int(round(c.steps * c.distill_fraction))
        self.validate_every = c.schedule.validate_every
        self.snapshot_every_s = c.schedule.snapshot_every_s
        self.checkpoint_every_s = c.schedule.checkpoint_every_s
        torch.manual_seed(c.schedule.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(c.schedule.seed)
        if "train" not in data.splits or len(data.splits["train"]) == 0:
            raise ValueError(f"{data.root}: dataset has no training images")
        self.teacher = NerfBackend(self.device)
        self.teacher.load(scene)
        for m in self.teacher.modules():
            m.requires_grad_(False)
        self.amp = c.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.background = torch.tensor(data.background, dtype=torch.float32, device=self.device)
        self.val_split = data.splits.get("val") or data.splits.get("test") or data.splits["train"]
        self.val_indices = validation_indices(len(self.val_split), config.schedule.validation_views)
        self.batcher: RayBatcher | None = None
        self.field: KiloNerfGrid | None = None
        self.ess: EssGrid | None = None
        self.render_config: KiloNerfRenderConfig | None = None
        self.alpha_delta = 0.0
        self.optimizer: torch.optim.Optimizer | None = None
        self.phase = -1  # optimiser built for: 0 distillation, 1 fine-tuning
        self.pool: dict[str, torch.Tensor] | None = None
        self.pool_ptr = 0
        self.phase_seconds = [0.0, 0.0]  # wall seconds spent in each phase (restored on resume)
        self.clock: tuple[int, float] | None = None
        self.started = time.perf_counter()

    # --------------------------------------------------------------------------------- helpers
    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def teacher_fn(self, pts: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher as the NeRF backend renders it (density masked by its occupancy grid)."""
        with self.autocast():
            sigma, rgb = masked_field(self.teacher.fine, self.teacher.grid, pts, dirs)
        return sigma.float(), rgb.float()

    def teacher_density(self, pts: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            sigma = self.teacher.fine.density(pts).float()
        if self.teacher.grid is not None:
            sigma = sigma * self.teacher.grid.query(pts).float()
        return sigma

    def chunk(self) -> int:
        return 1 << 20 if self.device.type == "cuda" else 1 << 15

    # ------------------------------------------------------------------------------- set-up
    @torch.no_grad()
    def build_grids(self) -> None:
        """Tight bounds, network grid, ESS occupancy grid and the networks (step 0 only)."""
        c = self.config
        aabb = self.scene.aabb_tensor.to(self.device)
        bounds = aabb
        if c.bounds_resolution > 0:
            bounds = tight_bounds(self.teacher_density, aabb, c.bounds_resolution, c.occupancy_threshold,
                                  c.occupancy_samples, self.chunk())
        box, cell_res = network_grid_box(bounds, c.grid_resolution)
        fine_res = tuple(r * c.occupancy_factor for r in cell_res)
        grid = OccupancyGrid(box, fine_res, self.device).build_from_density(
            self.teacher_density, c.occupancy_threshold, c.occupancy_samples, self.chunk())
        if not bool(grid.occupied.any()):
            raise TrainingError(f"no voxel of the {fine_res} occupancy grid has teacher density above "
                                f"{c.occupancy_threshold}; nothing to distil")
        cell_to_net = cell_network_map(grid.occupied, cell_res, c.occupancy_factor)
        self.set_grids(box, cell_to_net, grid.occupied, None)

    def set_grids(self, box: torch.Tensor, cell_to_net: torch.Tensor, occupied: torch.Tensor,
                  distance: torch.Tensor | None) -> None:
        c = self.config
        self.field = KiloNerfGrid(box, cell_to_net, c.field, seed=c.schedule.seed).to(self.device)
        self._cell_lo = None
        diag = float((box[1] - box[0]).norm())
        self.render_config = dataclasses.replace(c.render, step_size=diag * c.render_step_fraction)
        self.alpha_delta = diag * c.alpha_step_fraction
        self.ess = EssGrid(box, occupied, distance, self.render_config.distance_cap, self.field.cell_to_net)

    def make_optimizer(self, phase: int) -> None:
        lr = self.config.distill_lr if phase == 0 else self.config.finetune_lr
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-7)
        self.phase = phase

    def phase_progress(self, step: int) -> float:
        """How far the current phase is, in [0, 1]: by steps, or by its share of the time budget
        when that is further along (so a phase cut by the budget still ends with a decayed lr)."""
        c = self.config
        if step < self.distill_steps:
            f = step / max(self.distill_steps, 1)
            share, spent = c.time_budget_s * c.distill_fraction, self.phase_seconds[0]
        else:
            f = (step - self.distill_steps) / max(self.total_steps - self.distill_steps, 1)
            share, spent = c.time_budget_s - self.phase_seconds[0], self.phase_seconds[1]
        if c.time_budget_s > 0 and share > 0:
            f = max(f, spent / share)
        return min(f, 1.0)

    def lr_at(self, step: int) -> float:
        c = self.config
        f = self.phase_progress(step)
        if step < self.distill_steps:
            return c.distill_lr * (c.distill_lr_final / c.distill_lr) ** f
        return c.finetune_lr * (c.finetune_lr_final / c.finetune_lr) ** f

    # ---------------------------------------------------------------------------- the steps
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if self.field is None:
            self.build_grids()
        phase = 0 if step < self.distill_steps else 1
        if self.phase != phase:
            self.make_optimizer(phase)
        if self.clock is None or self.clock[0] != phase:
            self.clock = (phase, time.perf_counter() - self.phase_seconds[phase])
        self.phase_seconds[phase] = time.perf_counter() - self.clock[1]
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(step)
        losses = self.distill_step() if phase == 0 else self.finetune_step()
        self.phase_seconds[phase] = time.perf_counter() - self.clock[1]
        self.apply_budget(step, phase)
        return losses

    def apply_budget(self, step: int, phase: int) -> None:
        """Cut the current phase short when its share of ``time_budget_s`` is spent."""
        budget = self.config.time_budget_s
        if budget <= 0:
            return
        if phase == 0:
            if self.phase_seconds[0] >= budget * self.config.distill_fraction and step + 1 < self.distill_steps:
                finetune = self.total_steps - self.distill_steps
                self.distill_steps = step + 1
                self.total_steps = self.distill_steps + finetune
        elif sum(self.phase_seconds) >= budget:
            self.total_steps = step + 1

    def elapsed(self) -> float:
        """Seconds both phases have run, earlier (resumed) runs included (``TimeBudget``)."""
        return float(sum(self.phase_seconds))

    def done(self, step: int) -> bool:
        """Never early: ``apply_budget`` ends each phase by shortening ``total_steps``, so the
        engine still validates the last step."""
        return False

    # distillation ---------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_samples(self, n: int) -> dict[str, torch.Tensor]:
        """n random points per network in its enlarged cell: local coords, dirs, teacher rgb/alpha."""
        f = self.field
        m = f.n_networks
        m_ = 1.0 + self.config.cell_margin
        local = (torch.rand(m, n, 3, device=self.device, generator=self.generator) * 2 - 1) * m_
        dirs = F.normalize(torch.randn(m, n, 3, device=self.device, generator=self.generator), dim=-1)
        cs = f.cell_size
        if self._cell_lo is None:
            self._cell_lo = f.aabb[0] + f.network_cells().to(cs.dtype) * cs  # (M, 3) cell corners
        lo = self._cell_lo
        world = lo[:, None, :] + (local + 1) * 0.5 * cs
        flat_w, flat_d = world.reshape(-1, 3), dirs.reshape(-1, 3)
        sig, rgb = [], []
        for s in range(0, flat_w.shape[0], self.chunk()):
            a, b = self.teacher_fn(flat_w[s:s + self.chunk()], flat_d[s:s + self.chunk()])
            sig.append(a), rgb.append(b)
        sigma = torch.cat(sig).reshape(m, n)
        alpha = alpha_from_density(sigma, torch.tensor(self.alpha_delta, device=self.device))
        return {"local": local, "dirs": dirs, "rgb": torch.cat(rgb).reshape(m, n, 3), "alpha": alpha}

    def refresh_pool(self) -> None:
        c = self.config
        if self.pool is None:
            self.pool = self.teacher_samples(c.distill_pool)
            self.pool_ptr = 0
            return
        n = min(c.distill_refresh, c.distill_pool)
        if n <= 0:
            return
        fresh = self.teacher_samples(n)
        pos = (self.pool_ptr + torch.arange(n, device=self.device)) % c.distill_pool
        for k, v in fresh.items():
            self.pool[k][:, pos] = v
        self.pool_ptr = (self.pool_ptr + n) % c.distill_pool

    def distill_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        self.refresh_pool()
        m = self.field.n_networks
        idx = torch.randint(0, c.distill_pool, (m, c.distill_batch), device=self.device, generator=self.generator)
        rows = torch.arange(m, device=self.device)[:, None]
        batch = {k: v[rows, idx] for k, v in self.pool.items()}
        with self.autocast():
            sigma, rgb = self.field.forward_grouped(batch["local"], batch["dirs"])
        alpha = alpha_from_density(sigma.float(), torch.tensor(self.alpha_delta, device=self.device))
        loss_rgb = F.mse_loss(rgb.float(), batch["rgb"])
        loss_alpha = F.mse_loss(alpha, batch["alpha"])
        loss = loss_rgb + loss_alpha
        self.backward(loss)
        return {"loss": loss.detach(), "rgb": loss_rgb.detach(), "alpha": loss_alpha.detach()}

    # fine-tuning ----------------------------------------------------------------------------
    def finetune_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        if self.batcher is None:
            self.batcher = RayBatcher(self.data.splits["train"], self.data.ndc, self.device, self.generator)
            self.pool = None  # the distillation pool is no longer needed
        o, d, target = self.batcher.sample(c.finetune_rays)
        n = o.shape[0]
        near, far = self.near_far(n)
        ray_ids, t0, t1 = self.ess.grid.march(o, d, near, far, self.render_config.step_size, jitter=True,
                                              generator=self.generator)
        if ray_ids.numel() == 0:  # every ray missed the content: nothing to learn from this batch
            zero = torch.zeros((), device=self.device)
            return {"loss": zero, "psnr": zero, "samples_per_ray": zero}
        mid = 0.5 * (t0 + t1)
        pts = o[ray_ids] + mid[:, None] * d[ray_ids]
        vd = F.normalize(d, dim=-1)[ray_ids]
        with self.autocast():
            sigma, rgb = self.field(pts, vd)
        out = composite_packed(sigma.float(), rgb.float(), t0, t1, ray_ids, n, d.norm(dim=-1), self.background)
        mse = F.mse_loss(out["rgb"], target)
        loss = mse + c.l2_weight * self.field.view_weights_l2()
        self.backward(loss)
        return {"loss": loss.detach(), "psnr": -10.0 * torch.log10(mse.detach().clamp_min(1e-10)),
                "samples_per_ray": torch.tensor(ray_ids.numel() / n)}

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def near_far(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data.ndc is not None:
            return torch.zeros(n, device=self.device), torch.ones(n, device=self.device)
        return (torch.full((n,), float(self.data.near), device=self.device),
                torch.full((n,), float(self.data.far), device=self.device))

    # ---------------------------------------------------------------------------- rendering
    def backend(self) -> KiloNerfBackend:
        """A KiloNeRF backend sharing this job's field and grid (validation and tests)."""
        b = KiloNerfBackend(self.device)
        b.set_field(self.field, self.ess, self.render_config)
        b.ndc = self.data.ndc
        return b

    def render_camera(self, cam: Camera) -> torch.Tensor:
        """(H, W, 3) render of one camera by the student (validation)."""
        req = RenderRequest.from_camera(cam, self.data.near, self.data.far, background=tuple(self.data.background))
        self.field.eval()
        try:
            return self.backend().render(req).rgb
        finally:
            self.field.train()

    def validate(self) -> Validation:
        if self.field is None:
            self.build_grids()
        return validate_views(self.render_camera, self.val_split, self.val_indices,
                              self.config.schedule.validation_size)

    # ----------------------------------------------------------------------- state & results
    def model_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"field.{k}": v.detach() for k, v in self.field.state_dict().items()}
        t["ess.occupied"] = self.ess.grid.occupied.to(torch.uint8)
        t["ess.distance"] = self.ess.distance
        return t

    def model_config(self) -> dict:
        f = self.field
        return {
            "field": self.config.field.to_dict(),
            "render": self.render_config.to_dict(),
            "grid_resolution": list(f.resolution),
            "networks": f.n_networks,
            "occupancy_resolution": list(self.ess.resolution),
            "aabb": f.aabb.tolist(),
            "distill": self.config.to_dict(),
        }

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        t = dict(self.model_tensors()) if self.field is not None else {}
        if self.optimizer is not None:
            t.update(optimizer_tensors(self.optimizer))
            t["job.phase"] = torch.tensor(self.phase)
        t["job.distill_steps"] = torch.tensor(self.distill_steps)
        t["job.total_steps"] = torch.tensor(self.total_steps)
        t["job.elapsed"] = torch.tensor(self.phase_seconds, dtype=torch.float64)
        t["scaler.scale"] = torch.tensor(float(self.scaler.get_scale()) if self.amp else 1.0)
        return t

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.distill_steps = int(tensors.get("job.distill_steps", torch.tensor(self.distill_steps)))
        self.total_steps = int(tensors.get("job.total_steps", torch.tensor(self.total_steps)))
        if "job.elapsed" in tensors:
            self.phase_seconds = [float(x) for x in tensors["job.elapsed"]]
        if "field.cell_to_net" not in tensors:
            return
        fs = {k: v.to(self.device) for k, v in strip_prefix(tensors, "field").items()}
        self.set_grids(fs["aabb"].float(), fs["cell_to_net"], tensors["ess.occupied"].to(self.device).bool(),
                       tensors.get("ess.distance", None))
        self.field.load_state_dict(fs)
        if "job.phase" in tensors:
            self.make_optimizer(int(tensors["job.phase"]))
            load_optimizer_tensors(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()})
        if self.amp and "scaler.scale" in tensors:
            self.scaler.update(float(tensors["scaler.scale"]))

    def snapshot(self) -> dict | None:
        if self.field is None:
            return None
        state = {k: v.detach().cpu().clone() for k, v in self.model_tensors().items()}
        return {"backend": "kilonerf", "state": state, "config": self.model_config()}

    def finish(self) -> dict:
        if self.field is None:
            self.build_grids()
        v = self.validate()
        f = self.field
        metrics = {
            "val_psnr": round(v.psnr, 3),
            "steps": self.total_steps,
            "distill_steps": self.distill_steps,
            "finetune_steps": self.total_steps - self.distill_steps,
            "distill_seconds": round(self.phase_seconds[0], 1),
            "finetune_seconds": round(self.phase_seconds[1], 1),
            "train_seconds": round(time.perf_counter() - self.started, 1),
            "networks": f.n_networks,
            "params_per_network": f.params_per_network(),
            "grid_resolution": list(f.resolution),
            "occupancy_resolution": list(self.ess.resolution),
            "occupied_fraction": round(float(self.ess.grid.occupied.float().mean()), 4),
            "device": str(self.device),
        }
        self.scene.save_model("kilonerf", self.model_tensors(), self.model_config(), {"distill": metrics})
        return metrics
