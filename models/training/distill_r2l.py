"""R2L distillation: teach a deep residual light field the NeRF teacher's colours, then fine-tune.

One resumable job on the shared engine (``python main.py distill SCENE --backend r2l``):

1. **Pseudo data** (R2L Sec. 3.2). Random camera poses covering the region of the training
   cameras (``sample_pseudo_poses``) are rendered by the teacher (``NerfBackend``, fp16 on a
   GPU) into a compact pool: poses + intrinsics + uint8 colours, nothing else; rays are
   recomputed from the poses when batches are drawn, and every batch mixes rays from many
   images. The pool fills while training starts (``pseudo_per_step`` images per step), so the
   GUI and CLI keep getting progress events; it is cached in ``checkpoints/r2l_pseudo.safetensors``
   (with a fingerprint of the teacher and the pool settings) and survives restarts.
2. **Training**: MSE on colours, Adam with R2L's linear warm-up (1e-4 -> 5e-4 over 200 steps)
   then exponential decay 5e-4 * 0.1^((step - 200) / decay); hard-example mining (R2L's
   ``--hard_ratio 0.2 --hard_mul 20``, ``HardExamplePool``); bf16 autocast on CUDA.
3. **Fine-tuning** from ``finetune_start`` of the steps on: each batch mixes real training rays
   (``finetune_real_fraction``) with pseudo rays.

The student's sampling bounds (near/far, or 0..1 in NDC) are stored with its weights; the
``R2LBackend`` renders with exactly those.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.backends.base import RenderRequest
from models.backends.r2l import R2LBackend
from models.cameras import Camera, camera_rays, ndc_rays, pixel_rays, sample_pixel_batch
from models.data import SceneData, Split
from models.fields.feature_planes import planes_kernel_error
from models.fields.r2l_mlp import VARIANTS, R2LMLP, R2LMLPConfig
from models.evaluation import validate_views, validation_indices
from models.metrics import psnr
from models.scene import Scene
from models.storage import StorageError, load_tensors, save_tensors
from models.training.engine import (
    TimeBudget,
    TrainingError,
    TrainingJob,
    Validation,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    strip_prefix,
)
from models.training import distributed
from models.training.configs import JobConfig, ScheduleConfig
from models.training.pseudo_rays import (
    OnlineRays,
    RandomViewRays,
    TeacherRays,
    fresh_rays_for_budget,
    sample_pseudo_poses,
)
from models.training.teacher import RayBatcher


# ====================================================================================== config
@dataclass(frozen=True)
class R2LDistillConfig(JobConfig):
    """R2L distillation (teacher-labelled rays, training, fine-tuning on real images)."""

    steps: int = 20000
    """Total optimisation steps of the job (pseudo-data phase + fine-tuning)."""
    time_budget_s: float = 0.0
    """Stop after this many seconds (teacher labelling included; 0: no limit). Schedules then
    follow progress = max(step / steps, elapsed / time_budget_s), so a time-bounded run still
    decays its learning rate and reaches its fine-tuning phase."""
    mlp: R2LMLPConfig = field(default_factory=lambda: VARIANTS["W256D88"])
    """Student network: ray encoding, width, depth (linear layers), points per ray."""
    batch_rays: int = 65536
    """Rays per step and GPU, hard examples included (R2L: 24 files x 4096 = 98,304)."""
    lr: float = 5e-4
    """Peak Adam learning rate of the MLP (R2L: 5e-4)."""
    grid_lr: float = 1e-2
    """Peak Adam learning rate of the feature planes ("planes" encoding; same schedule)."""
    lr_warmup_start: float = 1e-4
    """MLP learning rate at step 0, rising linearly to ``lr`` (R2L ``--warmup_lr 0.0001,200``); the
    feature planes follow the same curve scaled by grid_lr / lr."""
    lr_warmup_steps: int = 200
    """Steps of the linear warm-up."""
    lr_decay_steps: int = 0
    """After warm-up lr = lr * 0.1^((s - warmup) / lr_decay_steps) with s = progress * steps;
    0 means ``steps`` (a short run ends at lr / 10). R2L: 500k."""
    hard_fraction: float = 0.2
    """Hard-example mining: the highest-error fraction of each batch's fresh rays goes into the
    hard pool, and this fraction of each batch is drawn from it once it is full (R2L: 0.2)."""
    hard_pool_factor: float = 20.0
    """Hard pool capacity in batches (R2L ``--hard_mul 20``); 0 disables hard-example mining."""
    pseudo_source: str = "online"
    """"online": every step's pseudo rays are new, from random poses at the training images'
    resolution, labelled by the teacher as training goes (``OnlineRays``); "pool": R2L's fixed set
    of ``pseudo_images`` teacher images, rendered at the start and cached in the checkpoint folder."""
    pseudo_renderer: str = "auto"
    """Which teacher labels the rays: "kilonerf" (the scene's distilled KiloNeRF), "march" (the
    NeRF teacher's fine network through its occupancy grid, early ray termination), "backend"
    (the NeRF backend: 64 coarse + 192 fine evaluations per ray) or "auto" (the first of these
    the scene has)."""
    online_fresh_rays: int = 0
    """"online": rays the teacher labels per step; 0 chooses it from ``teacher_share`` (all of
    the batch when the teacher is fast enough, else a share topped up from the replay buffer)."""
    teacher_share: float = 0.3
    """"online", ``online_fresh_rays`` = 0: the fraction of each step's time the teacher may take."""
    online_buffer_batches: float = 64.0
    """"online": replay-buffer capacity in batches, used when the teacher labels fewer rays than a
    batch (0: always label the whole batch)."""
    pose_bank: int = 1 << 16
    """"online": random poses drawn at the start; each ray takes one of them."""
    pseudo_images: int = 1000
    """"pool": teacher images in the pool (R2L: 10k at 400x400)."""
    pseudo_size: int = 200
    """"pool": longest side of the pseudo images, pixels (same field of view as the training cameras)."""
    pseudo_per_step: int = 1
    """"pool": images rendered per training step until the pool is full."""
    look_jitter_deg: float = 0.0
    """Extra random tilt of pseudo cameras' viewing direction, degrees, on top of the spread
    of the training cameras' own viewing directions around the scene centre."""
    real_fraction: float = 0.0
    """Fraction of each batch's fresh rays taken from the real training images before
    fine-tuning (R2L: 0, pseudo data only)."""
    finetune_start: float = 0.75
    """Fine-tuning starts at this progress (fraction of steps or of the time budget; R2L: 1.2M of
    1.6M = 0.75)."""
    finetune_real_fraction: float = 0.5
    """Fraction of fresh rays from the real training images while fine-tuning."""
    planes_accel: str = "auto"
    """"planes": how the feature planes are looked up while training: "triton" (gather kernel, and
    atomic adds for the gradients), "torch" (``grid_sample``) or "auto" (triton on CUDA when its
    check against grid_sample passes)."""
    box_margin: float = 0.02
    """"planes": the feature planes span the teacher's occupied voxels grown by this fraction of
    the scene box on every side (the whole scene box when the teacher has no occupancy grid)."""
    mixed_precision: bool = True
    """Autocast on CUDA (``amp_dtype``); ignored on CPU."""
    amp_dtype: str = "bf16"
    """"bf16" (no loss scaling needed) or "fp16" (with a gradient scaler)."""
    compile: bool = False
    """torch.compile the student's MLP for training (CUDA; costs a minute of compilation)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Validation (0: only at the end), checkpoint and live-preview intervals, and the seed of pseudo
    poses, ray sampling and initialisation (each distributed rank adds its rank)."""


PRESETS: dict[str, R2LDistillConfig] = {
    # CPU tests: the CPU-scale feature-plane student, online rays from the tiny teacher; under a
    # minute on 2 idle cores.
    "tiny": R2LDistillConfig(
        steps=1000, mlp=VARIANTS["P8x4-128-K32-W128D8"], batch_rays=1024, lr=5e-3, grid_lr=0.1,
        lr_warmup_start=5e-4, lr_warmup_steps=50, online_fresh_rays=1024, pseudo_images=48, pseudo_size=24,
        pseudo_per_step=4, finetune_start=0.5,
        schedule=ScheduleConfig(validate_every=250, validation_views=2, checkpoint_every_s=10.0, snapshot_every_s=1.0),
    ),
    # A first look in a few minutes on one GPU.
    "quick": R2LDistillConfig(
        steps=200_000, time_budget_s=180.0, mlp=VARIANTS["P8x4-512-K128-W256D12-M128"], batch_rays=65536,
        lr=1.5e-3, real_fraction=0.5, grid_lr=0.05, pseudo_images=300, schedule=ScheduleConfig(validate_every=2000),
    ),
    # The recommended recipe: 14.5 minutes of distillation on one GPU (time-bounded; the step count
    # is only a cap), online teacher rays mixed half and half with rays of the real training images
    # (+0.8 dB at equal time against pseudo rays alone, docs/benchmarks.md), MLP learning rate
    # 1.5e-3, 128 points per ray in the teacher's occupied space (lego 400x400 on an H200: 30.70 dB
    # against the teacher's 29.98). `--variant W256D88` trains the paper's network on the same recipe.
    "standard": R2LDistillConfig(
        steps=1_000_000, time_budget_s=870.0, mlp=VARIANTS["P8x4-512-K128-W256D12-M128"], batch_rays=65536,
        lr=1.5e-3, real_fraction=0.5, grid_lr=0.05, pseudo_images=2000, schedule=ScheduleConfig(validate_every=2500),
    ),
    # For users with an hour: the standard recipe over 50 minutes.
    "long": R2LDistillConfig(
        steps=5_000_000, time_budget_s=3000.0, mlp=VARIANTS["P8x4-512-K128-W256D12-M128"], batch_rays=65536,
        lr=1.5e-3, real_fraction=0.5, grid_lr=0.05, pseudo_images=2000,
        schedule=ScheduleConfig(validate_every=10000, checkpoint_every_s=300.0),
    ),
    # The paper's recipe (R2L, ECCV 2022, Sec. 4): 10k pseudo images at 400x400 rendered by the
    # teacher, 1.2M steps on pseudo data + 0.4M steps fine-tuning on real images mixed with pseudo
    # data (1.6M in all), 98,304 rays per step, Adam 5e-4 with 200 warm-up steps from 1e-4 and
    # decay 0.1^((step-200)/500k), hard-example mining 0.2 x 20 batches. Lego: teacher 31.42 dB
    # -> R2L 32.53 dB in the paper. Resumable; run it as repeated invocations.
    "paper": R2LDistillConfig(
        steps=1_600_000, mlp=VARIANTS["W256D88"], batch_rays=98304, lr_decay_steps=500_000, pseudo_source="pool",
        pseudo_images=10000, pseudo_size=400, pseudo_per_step=1, finetune_start=0.75,
        finetune_real_fraction=0.5, schedule=ScheduleConfig(validate_every=10000, checkpoint_every_s=600.0),
    ),
}
"""Presets: data, not code branches. ``steps`` is overridden by ``distill --steps``."""


def occupied_box(aabb: torch.Tensor, occupied: torch.Tensor | None, margin: float) -> torch.Tensor:
    """(2, 3) box around the occupied voxels of a grid ``occupied`` (X, Y, Z) over ``aabb`` (2, 3),
    grown by ``margin`` times the box size on every side and clipped to ``aabb`` (the whole
    ``aabb`` when there is no grid or it is empty)."""
    aabb = torch.as_tensor(aabb, dtype=torch.float32).cpu()
    if occupied is None or not bool(occupied.any()):
        return aabb
    res = torch.tensor(occupied.shape, dtype=torch.float32)
    idx = torch.nonzero(occupied.cpu()).float()
    size = aabb[1] - aabb[0]
    lo = aabb[0] + idx.min(0).values / res * size
    hi = aabb[0] + (idx.max(0).values + 1) / res * size
    m = margin * size
    return torch.stack([torch.maximum(lo - m, aabb[0]), torch.minimum(hi + m, aabb[1])])


# ================================================================================= pseudo pool
class PseudoPool:
    """Teacher-rendered pseudo images: poses + intrinsics + uint8 colours, filled progressively.

    Rays are recomputed from the poses when sampled (12 bytes of pool per ray instead of 36+).
    """

    def __init__(self, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, device: torch.device,
                 ndc: dict | None, generator: torch.Generator):
        n = c2w.shape[0]
        self.c2w = c2w.float().to(device)  # (N, 4, 4)
        self.intr = intrinsics.float().to(device)  # (N, 4) fx, fy, cx, cy
        self.images = torch.zeros(n, height, width, 3, dtype=torch.uint8, device=device)
        self.height, self.width = height, width
        self.done = 0
        """Images rendered so far (the first ``done`` entries are valid)."""
        self.saved = 0
        """``done`` when the pool was last written to disk."""
        self.ndc = ndc
        self.device = device
        self.generator = generator

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def full(self) -> bool:
        return self.done >= len(self)

    def camera(self, i: int) -> Camera:
        k = self.intr[i].tolist()
        return Camera(self.c2w[i].cpu(), self.width, self.height, *k)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n random rays from the rendered images: origins, directions (NDC if the scene is), colours."""
        img, u, v = sample_pixel_batch(self.done, self.height, self.width, n, self.generator, self.device)
        k = self.intr[img]
        o, d = pixel_rays(self.c2w[img], k[:, 0], k[:, 1], k[:, 2], k[:, 3], u, v)
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
        return o, d, self.images[img, v, u].float() / 255.0

    # --------------------------------------------------------------------------- persistence
    def save(self, path: Path, fingerprint: str) -> None:
        save_tensors(path, {"c2w": self.c2w, "intrinsics": self.intr, "images": self.images[: max(self.done, 1)]},
                     metadata={"fingerprint": fingerprint, "done": str(self.done)})
        self.saved = self.done

    def load(self, path: Path, fingerprint: str) -> bool:
        """Restore rendered images from ``path`` if it was made with the same ``fingerprint``."""
        path = Path(path)
        if not path.exists():
            return False
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if meta.get("fingerprint") != fingerprint:
                return False
            t = load_tensors(path)
        except (StorageError, Exception):  # noqa: BLE001 - an unreadable cache is regenerated
            return False
        done = int(meta.get("done", 0))
        imgs = t.get("images")
        if imgs is None or imgs.shape[1:] != self.images.shape[1:] or done > len(self) or imgs.shape[0] < done:
            return False
        if not torch.allclose(t["c2w"].to(self.device), self.c2w):
            return False
        self.images[:done] = imgs[:done].to(self.device)
        self.done = self.saved = done
        return True


# =========================================================================== hard-example pool
class HardExamplePool:
    """R2L's hard-example mining: a pool of the highest-error rays of past batches.

    Rows are whatever describes a training ray (here origin, direction, target colour: 9
    floats). Each step ``push`` keeps the ``k`` highest-error rows of the step's fresh rays: it
    appends them while the pool is not full, then overwrites the slots that ``draw`` handed out
    this step (those rays were just trained on), or random slots if fewer were drawn. Rows are
    drawn (without replacement within a step) only once the pool is full, as in the reference
    code (snap-research/R2L main.py, ``hard_pool_full``).
    """

    def __init__(self, capacity: int, width: int, device: torch.device, generator: torch.Generator | None = None):
        self.capacity = int(capacity)
        self.rows = torch.zeros(self.capacity, width, device=device)
        self.size = 0
        self.generator = generator

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.size >= self.capacity

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots (n,), rows (n, width)) drawn at random from a full pool; empty if not full."""
        dev = self.rows.device
        if not self.full or n <= 0:
            return torch.zeros(0, dtype=torch.long, device=dev), self.rows[:0]
        slots = torch.randperm(self.capacity, generator=self.generator, device=dev)[: min(n, self.capacity)]
        return slots, self.rows[slots]

    def push(self, rows: torch.Tensor, errors: torch.Tensor, k: int, replace: torch.Tensor | None = None) -> None:
        """Keep the ``k`` rows of highest ``errors`` (rows (m, width), errors (m,))."""
        if self.capacity == 0 or k <= 0 or rows.shape[0] == 0:
            return
        k = min(k, rows.shape[0])
        top = torch.topk(errors, k).indices
        hard = rows[top].to(self.rows.dtype)
        if not self.full:
            n = min(k, self.capacity - self.size)
            self.rows[self.size : self.size + n] = hard[:n]
            self.size += n
            return
        slots = replace[:k] if replace is not None else torch.zeros(0, dtype=torch.long, device=self.rows.device)
        if slots.numel() < k:
            extra = torch.randint(0, self.capacity, (k - slots.numel(),), generator=self.generator,
                                  device=self.rows.device)
            slots = torch.cat([slots, extra])
        self.rows[slots] = hard


# ========================================================================================= job
class _RayStudent(nn.Module):
    """The student as one module from rays to colours, for training (and DistributedDataParallel):
    encoding with stratified jitter in float32 (feature planes included), MLP under autocast."""

    def __init__(self, net: R2LMLP, generator: torch.Generator, autocast, mlp=None):
        super().__init__()
        self.net = net
        self.generator = generator
        self.autocast = autocast
        self.mlp = mlp or net

    def forward(self, origins, dirs, near, far):
        enc = self.net.encode(origins, dirs, near, far, perturb=True, generator=self.generator)
        with self.autocast():
            return self.mlp(enc)


class R2LDistillJob(TimeBudget, TrainingJob):
    """Distils the scene's teacher into an R2L light field (teacher-labelled rays, training, fine-tune)."""

    stage = "r2l"
    POOL_FILE = "r2l_pseudo.safetensors"

    def __init__(self, scene: Scene, data: SceneData, config: R2LDistillConfig, device: torch.device):
        self.dist = distributed.current()
        self.is_main = self.dist.is_main
        self.scene, self.data, self.config = scene, data, config
        self.device = distributed.device_for_rank(torch.device(device), self.dist)
        c = config
        if c.steps < 1:
            raise ValueError("r2l: steps must be >= 1")
        if not 0 <= c.hard_fraction < 1 or not 0 <= c.real_fraction <= 1 or not 0 <= c.finetune_real_fraction <= 1:
            raise ValueError("r2l: hard_fraction must be in [0, 1), real fractions in [0, 1]")
        if c.pseudo_source not in ("online", "pool"):
            raise ValueError(f"r2l: pseudo_source must be online or pool, got {c.pseudo_source!r}")
        if not 0 < c.teacher_share <= 1 or c.batch_rays < 1 or c.online_fresh_rays < 0:
            raise ValueError("r2l: teacher_share must be in (0, 1], batch_rays >= 1, online_fresh_rays >= 0")
        if c.amp_dtype not in ("bf16", "fp16"):
            raise ValueError(f"r2l: amp_dtype must be bf16 or fp16, got {c.amp_dtype!r}")
        self.total_steps = c.steps
        self.validate_every = c.schedule.validate_every
        self.snapshot_every_s = c.schedule.snapshot_every_s if self.is_main else 0.0
        self.checkpoint_every_s = c.schedule.checkpoint_every_s
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.steps_done = 0
        seed = c.schedule.seed + self.dist.rank
        torch.manual_seed(c.schedule.seed)  # identical initial weights on every rank
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        if "train" not in data.splits or len(data.splits["train"]) == 0:
            raise ValueError(f"{data.root}: dataset has no training images")
        if "nerf" not in scene.backends:
            raise TrainingError(f"{scene.root}: distilling R2L needs a trained NeRF teacher first (run train)")
        train = data.splits["train"]
        self.ndc = data.ndc
        self.near, self.far = (0.0, 1.0) if data.ndc is not None else (float(data.near), float(data.far))
        self.background = tuple(float(x) for x in data.background)
        self.batcher = RayBatcher(train, data.ndc, self.device, self.generator)

        # ---- student, optimiser, precision
        self.notes: list[str] = []
        """What the job chose and why (execution paths, teacher), for logs."""
        occ = None
        if c.mlp.mask_resolution:
            occ = scene.load_occupancy("cpu") if self.ndc is None else None
            if occ is None or not bool(occ.any()):
                # forward-facing scenes (NDC) and teachers without an occupancy grid: the same network
                # without the mask (the mask only skips empty space; it is not needed for correctness)
                plain = dataclasses.replace(c.mlp, mask_resolution=0)
                self.notes.append(f"{c.mlp.name}: the scene has no occupancy grid to build the mask from "
                                  f"({'forward-facing scene' if self.ndc is not None else 'teacher without one'}); "
                                  f"distilling {plain.name}")
                c = self.config = dataclasses.replace(c, mlp=plain)
        self.student = R2LMLP(c.mlp).to(self.device)
        if c.mlp.encoding == "planes":
            self.student.set_box(self.feature_box())
            self.student.planes.accel = self._planes_accel()
        if c.mlp.mask_resolution:
            kept = self.student.set_mask_from_occupancy(occ, self.data.aabb.float().cpu())
            self.notes.append(f"occupancy mask {c.mlp.mask_resolution}^3: {100 * kept:.1f} % of the feature box kept")
        fused = self.device.type == "cuda"
        groups = [{"params": self.student.mlp_parameters(), "peak": c.lr}]
        if self.student.grid_parameters():
            groups.append({"params": self.student.grid_parameters(), "peak": c.grid_lr})
        self.optimizer = torch.optim.Adam(groups, lr=c.lr_warmup_start, betas=(0.9, 0.999), eps=1e-8,
                                          **({"fused": True} if fused else {}))
        self.amp = c.mixed_precision and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if c.amp_dtype == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        mlp = torch.compile(self.student) if (c.compile and self.device.type == "cuda") else None
        self.model = _RayStudent(self.student, self.generator, self.autocast, mlp)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)

        # ---- hard examples, pseudo rays
        self.hard = HardExamplePool(int(c.hard_pool_factor * c.batch_rays) if c.hard_fraction > 0 else 0, 9,
                                    self.device, self.generator)
        self.teacher = TeacherRays(scene, data, self.device, c.pseudo_renderer)
        poses = sample_pseudo_poses(train.c2w, c.pose_bank if c.pseudo_source == "online" else c.pseudo_images,
                                    seed, self.ndc is not None, torch.tensor(self.data.up, dtype=torch.float32),
                                    data.aabb.float().mean(0), c.look_jitter_deg)
        self.online: OnlineRays | None = None
        self.pool: PseudoPool | None = None
        if c.pseudo_source == "online":
            views = RandomViewRays(train, poses, self.ndc, self.device, self.generator)
            fresh = c.online_fresh_rays or c.batch_rays
            buffer = int(c.online_buffer_batches * c.batch_rays)
            self.online = OnlineRays(views, self.teacher, min(fresh, c.batch_rays), buffer,
                                     chunk=c.batch_rays if self.device.type == "cuda" else 4096)
            self.adaptive = c.online_fresh_rays == 0 and buffer > c.batch_rays
        else:
            self.adaptive = False
            self.pool = self._make_pool(train, poses, seed)
            self.pool_path = scene.checkpoint_dir / (self.POOL_FILE if not self.dist.enabled
                                                     else f"r2l_pseudo.rank{self.dist.rank}.safetensors")
            self.fingerprint = self._fingerprint()
            self.pool.load(self.pool_path, self.fingerprint)  # resumed: only the missing images are rendered
        self._step_clock: float | None = None
        self._teacher_clock = 0.0
        self.student_rays_per_s = 0.0
        self.val_split = data.splits.get("val") or data.splits.get("test") or train
        self.val_indices = validation_indices(len(self.val_split), c.schedule.validation_views)
        self.last_val: float | None = None
        self.gap_views: list[tuple[Camera, torch.Tensor]] | None = None
        """Two fixed random poses at the training resolution and the teacher's renders of them:
        validation measures the student against its teacher there too (no test view involved)."""

    # ------------------------------------------------------------------------ scene box
    def feature_box(self) -> torch.Tensor:
        """(2, 3) box the feature planes span: the teacher's occupied voxels plus a margin."""
        if self.ndc is not None:
            return torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        return occupied_box(self.data.aabb, self.scene.load_occupancy("cpu"), self.config.box_margin)

    def _planes_accel(self) -> str:
        """"triton" if requested (or "auto" on CUDA) and the kernels agree with grid_sample."""
        mode = self.config.planes_accel
        if mode not in ("auto", "triton", "torch"):
            raise ValueError(f"r2l: planes_accel must be auto, triton or torch, got {mode!r}")
        if mode == "torch" or (mode == "auto" and self.device.type != "cuda"):
            return "torch"
        try:
            err = planes_kernel_error(self.student.planes, self.device)
            if err > 1e-4:
                raise RuntimeError(f"gather kernels disagree with grid_sample (relative error {err:.2e})")
            return "triton"
        except Exception as e:  # noqa: BLE001 - any failure: the reference path
            if mode == "triton":
                raise TrainingError(f"r2l: feature-plane kernels unavailable: {e}") from None
            self.notes.append(f"feature-plane kernels unavailable ({type(e).__name__}: {str(e)[:200]}); "
                              "training with grid_sample")
            return "torch"

    # ------------------------------------------------------------------------------- pool
    def _make_pool(self, train: Split, poses: torch.Tensor, seed: int) -> PseudoPool:
        c = self.config
        n = poses.shape[0] // max(1, self.dist.world)
        s = c.pseudo_size / max(train.width, train.height)
        width, height = max(1, round(train.width * s)), max(1, round(train.height * s))
        g = torch.Generator().manual_seed(seed + 1)
        pick = torch.randint(0, len(train), (n,), generator=g)
        k = train.intrinsics[pick].float()
        intr = torch.stack([k[:, 0] * width / train.width, k[:, 1] * height / train.height,
                            k[:, 2] * width / train.width, k[:, 3] * height / train.height], -1)
        return PseudoPool(poses[:n], intr, height, width, self.device, self.ndc, self.generator)

    def _fingerprint(self) -> str:
        c = self.config
        entry = self.scene.backends.get("nerf", {})
        weights = self.scene.root / entry.get("weights", "nerf.safetensors")
        size = weights.stat().st_size if weights.exists() else 0
        return (f"teacher={entry.get('updated', '')}:{size};images={c.pseudo_images};size={c.pseudo_size};"
                f"seed={c.schedule.seed};jitter={c.look_jitter_deg};renderer={self.teacher.kind};"
                f"dataset={self.data.kind}:{len(self.data.splits['train'])}")

    @torch.no_grad()
    def fill_pool(self, n_images: int) -> int:
        """Render up to ``n_images`` more pool images with the teacher; returns how many."""
        pool = self.pool
        todo = min(n_images, len(pool) - pool.done)
        if todo <= 0:
            return 0
        for _ in range(todo):
            i = pool.done
            o, d = camera_rays(pool.camera(i), self.device)
            o, d = o.reshape(-1, 3), d.reshape(-1, 3)
            if self.ndc is not None:
                o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
            rgb = self.teacher(o, d).reshape(pool.height, pool.width, 3)
            pool.images[i] = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
            pool.done += 1
        if pool.full:
            if not self.dist.enabled:
                pool.save(self.pool_path, self.fingerprint)
            self.teacher.close()  # free the teacher's memory
        return todo

    # ------------------------------------------------------------------------------- step
    def lr_at(self, step: int, progress: float | None = None) -> float:
        """R2L's schedule for the MLP: linear warm-up over the first steps, then exponential decay."""
        c = self.config
        if step < c.lr_warmup_steps:
            return c.lr_warmup_start + (c.lr - c.lr_warmup_start) * step / c.lr_warmup_steps
        s = (self.progress(step) if progress is None else progress) * c.steps
        decay = c.lr_decay_steps or c.steps
        return c.lr * 0.1 ** (max(s - c.lr_warmup_steps, 0.0) / decay)

    def real_fraction_at(self, progress: float) -> float:
        c = self.config
        if self.pool is not None and self.pool.done == 0:
            return 1.0
        return c.finetune_real_fraction if progress >= c.finetune_start else c.real_fraction

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    def bounds(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.full((n,), self.near, device=self.device), torch.full((n,), self.far, device=self.device))

    def done(self, step: int) -> bool:
        # every rank must stop at the same step (a rank that stopped alone would hang the others)
        return distributed.any_rank(TimeBudget.done(self, step), self.device)

    def _adapt_fresh_rays(self, n_pseudo: int) -> None:
        """Measure the student's and the teacher's speed and size the teacher's share of a step."""
        now = time.perf_counter()
        if self._step_clock is not None:
            wall = now - self._step_clock
            student = max(wall - (self.teacher.seconds - self._teacher_clock), 1e-6)
            rate = self.config.batch_rays / student
            self.student_rays_per_s = rate if not self.student_rays_per_s else 0.9 * self.student_rays_per_s + 0.1 * rate
        self._step_clock, self._teacher_clock = now, self.teacher.seconds
        if self.adaptive and self.teacher.rays >= 8 * self.config.batch_rays and self.student_rays_per_s:
            t_rate = self.teacher.rays / max(self.teacher.seconds, 1e-9)
            self.online.fresh = min(n_pseudo, fresh_rays_for_budget(self.config.batch_rays, t_rate,
                                                                     self.student_rays_per_s, self.config.teacher_share))

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        extra = {}
        if self.pool is not None and not self.pool.full:
            self.fill_pool(c.pseudo_per_step)
            extra["pseudo_images"] = torch.tensor(float(self.pool.done))
        self.steps_done = step + 1
        progress = self.progress(step)
        lr = self.lr_at(step, progress)
        for grp in self.optimizer.param_groups:
            grp["lr"] = lr * grp["peak"] / c.lr

        n_hard = int(round(c.hard_fraction * c.batch_rays)) if self.hard.full else 0
        n_fresh = c.batch_rays - n_hard
        n_real = int(round(self.real_fraction_at(progress) * n_fresh))
        parts = []
        if n_real:
            parts.append(torch.cat(self.batcher.sample(n_real), -1))
        if n_fresh - n_real:
            if self.online is not None:
                self._adapt_fresh_rays(n_fresh - n_real)
                parts.append(self.online.sample(n_fresh - n_real))
                extra["fresh_rays"] = torch.tensor(float(min(self.online.fresh, n_fresh - n_real)))
            else:
                parts.append(torch.cat(self.pool.sample(n_fresh - n_real), -1))
        fresh = torch.cat(parts) if len(parts) > 1 else parts[0]  # (n_fresh, 9)
        slots, hard_rows = self.hard.draw(n_hard)
        rows = torch.cat([fresh, hard_rows]) if n_hard else fresh
        o, d, target = rows[:, :3], rows[:, 3:6], rows[:, 6:9]
        near, far = self.bounds(rows.shape[0])
        pred = self.model(o, d, near, far)
        err = ((pred.float() - target) ** 2).mean(-1)  # (B,)
        loss = err.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.hard.push(fresh, err[:n_fresh].detach(), int(round(c.hard_fraction * c.batch_rays)), slots)
        return {"loss": loss.detach(), "psnr": -10.0 * torch.log10(loss.detach().clamp_min(1e-10)),
                "lr": torch.tensor(lr), **extra}

    # ------------------------------------------------------------------------- rendering
    def backend(self) -> R2LBackend:
        """An R2L backend sharing the student (validation, previews); plain-PyTorch path."""
        b = R2LBackend(self.device, self.config.mlp, accel="torch")
        b.net = self.student
        b.near, b.far = self.near, self.far
        b.ndc = self.ndc
        return b

    def render_camera(self, cam: Camera) -> torch.Tensor:
        """(H, W, 3) student render of one camera (validation, previews)."""
        req = RenderRequest.from_camera(cam, self.data.near, self.data.far, background=self.background)
        self.student.eval()
        try:
            return self.backend().render(req).rgb
        finally:
            self.student.train()

    def teacher_gap_views(self, n: int = 2) -> list[tuple[Camera, torch.Tensor]]:
        """(camera, teacher render (H, W, 3) on the CPU) of ``n`` fixed random poses, rendered once."""
        if self.gap_views is None:
            train = self.data.splits["train"]
            poses = sample_pseudo_poses(train.c2w, n, self.config.schedule.seed + 12345, self.ndc is not None,
                                        torch.tensor(self.data.up, dtype=torch.float32),
                                        self.data.aabb.float().mean(0), self.config.look_jitter_deg)
            k = train.intrinsics[0]
            views = []
            for i in range(n):
                cam = Camera(poses[i], train.width, train.height, *(float(x) for x in k))
                o, d = camera_rays(cam, self.device)
                o, d = o.reshape(-1, 3), d.reshape(-1, 3)
                if self.ndc is not None:
                    o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
                t_before = self.teacher.seconds, self.teacher.rays
                rgb = self.teacher(o, d).reshape(cam.height, cam.width, 3).cpu()
                self.teacher.seconds, self.teacher.rays = t_before  # not training data: not counted
                views.append((cam, rgb))
            self.gap_views = views
        return self.gap_views

    def validate(self) -> Validation:
        if not self.is_main:  # rank 0 alone reports
            return Validation(self.last_val if self.last_val is not None else 0.0)
        v = validate_views(self.render_camera, self.val_split, self.val_indices, self.config.schedule.validation_size)
        gap = [psnr(self.render_camera(cam).float().cpu(), ref) for cam, ref in self.teacher_gap_views()]
        v.metrics["psnr_vs_teacher"] = round(float(sum(gap) / len(gap)), 3)
        self.last_val = v.psnr
        return v

    # ----------------------------------------------------------------------- state & results
    def model_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float() for k, v in self.student.state_dict().items()}

    def model_config(self) -> dict:
        return {"mlp": self.config.mlp.to_dict(), "near": self.near, "far": self.far,
                "ndc": self.ndc is not None, "flops_per_ray": self.student.flops_per_ray(),
                "parameters": self.student.parameter_count(), "distill": self.config.to_dict()}

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        if self.pool is not None and self.pool.done > self.pool.saved and not self.dist.enabled:
            self.pool.save(self.pool_path, self.fingerprint)  # keep the pseudo data with the checkpoint
        return {**module_tensors(self.student, "student"), **optimizer_tensors(self.optimizer),
                "scaler.scale": torch.tensor(float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0),
                "elapsed_s": torch.tensor(self.elapsed(), dtype=torch.float64),
                "teacher_s": torch.tensor(self.teacher_seconds, dtype=torch.float64)}

    @property
    def teacher_seconds(self) -> float:
        return self.teacher_before + self.teacher.seconds

    teacher_before: float = 0.0

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        try:
            self.student.load_state_dict({k: v.to(self.device) for k, v in strip_prefix(tensors, "student").items()})
            load_optimizer_tensors(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()})
        except (RuntimeError, ValueError, KeyError) as e:
            raise TrainingError(f"r2l checkpoint does not match this configuration ({str(e).splitlines()[0]}); "
                                "rerun with --restart") from None
        if self.scaler.is_enabled() and "scaler.scale" in tensors:
            self.scaler.update(float(tensors["scaler.scale"]))
        self.elapsed_before = float(tensors.get("elapsed_s", torch.tensor(0.0)))
        self.teacher_before = float(tensors.get("teacher_s", torch.tensor(0.0))) - self.teacher.seconds
        self.started = time.perf_counter()

    def snapshot(self) -> dict:
        state = {k: v.cpu().clone() for k, v in self.model_tensors().items()}
        return {"backend": "r2l", "state": state, "config": self.model_config()}

    def finish(self) -> dict:
        v = self.validate()
        metrics = {"val_psnr": round(v.psnr, 3), **v.metrics, "steps": self.steps_done or self.total_steps,
                   "train_seconds": round(self.elapsed(), 1), "teacher_seconds": round(self.teacher_seconds, 1),
                   "teacher": self.teacher.kind, "pseudo_source": self.config.pseudo_source,
                   "teacher_rays": self.teacher.rays * self.dist.world, "network": self.config.mlp.name,
                   "flops_per_ray": self.student.flops_per_ray(), "parameters": self.student.parameter_count(),
                   "device": str(self.device), "processes": self.dist.world,
                   "rays_per_step": self.config.batch_rays * self.dist.world}
        if self.pool is not None:
            metrics.update(pseudo_images=self.pool.done, pseudo_size=[self.pool.width, self.pool.height])
        if self.is_main:
            self.scene.save_model("r2l", self.model_tensors(), self.model_config(), {"distill": metrics})
        return metrics

    def close(self) -> None:
        self.teacher.close()
