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
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import RenderRequest
from models.backends.nerf import NerfBackend
from models.backends.r2l import R2LBackend
from models.cameras import Camera, camera_rays, ndc_rays, pixel_rays, sample_pixel_batch
from models.data import SceneData, Split
from models.fields.r2l_mlp import VARIANTS, R2LMLP, R2LMLPConfig, encode_rays
from models.metrics import psnr
from models.rendering import composite_packed
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
from models.training.teacher import RayBatcher


# ====================================================================================== config
@dataclass(frozen=True)
class R2LDistillConfig:
    """R2L distillation (pseudo data from the teacher, training, fine-tuning on real images)."""

    steps: int = 20000
    """Total optimisation steps of the job (pseudo-data phase + fine-tuning)."""
    time_budget_s: float = 0.0
    """Stop after this many seconds (pseudo-data rendering included; 0: no limit). Schedules then
    follow progress = max(step / steps, elapsed / time_budget_s), so a time-bounded run still
    decays its learning rate and reaches its fine-tuning phase."""
    mlp: R2LMLPConfig = field(default_factory=lambda: VARIANTS["W256D88"])
    """Student network: width, depth (linear layers), points per ray, PE frequencies."""
    batch_rays: int = 65536
    """Rays per step, hard examples included (R2L: 24 files x 4096 = 98,304)."""
    lr: float = 5e-4
    """Peak Adam learning rate (R2L: 5e-4)."""
    lr_warmup_start: float = 1e-4
    """Learning rate at step 0, rising linearly to ``lr`` (R2L ``--warmup_lr 0.0001,200``)."""
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
    pseudo_images: int = 1000
    """Pseudo images rendered by the teacher into the pool (R2L: 10k at 400x400)."""
    pseudo_size: int = 200
    """Longest side of the pseudo images, pixels (same field of view as the training cameras)."""
    pseudo_per_step: int = 1
    """Pseudo images rendered per training step until the pool is full."""
    pseudo_renderer: str = "auto"
    """How the teacher renders pseudo images: "backend" (the NeRF backend: 64 coarse + 192 fine
    network evaluations per ray), "march" (the occupancy-grid marcher the teacher was trained
    with: samples only in occupied voxels, several times fewer evaluations), or "auto" (march
    when the teacher was trained with the occupancy sampler and the scene has its grid)."""
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
    mixed_precision: bool = True
    """Autocast on CUDA (``amp_dtype``); ignored on CPU."""
    amp_dtype: str = "bf16"
    """"bf16" (no loss scaling needed) or "fp16" (with a gradient scaler)."""
    compile: bool = False
    """torch.compile the student for training (CUDA; costs a minute of compilation)."""
    validate_every: int = 1000
    """Steps between validations (0: only at the end)."""
    validation_size: int = 200
    """Longest side of validation renders."""
    validation_views: int = 4
    """Validation views averaged (the first ones of the val split, else test, else train)."""
    checkpoint_every_s: float = 60.0
    """Seconds between checkpoints (the pseudo pool is saved with them while it fills)."""
    snapshot_every_s: float = 5.0
    """Seconds between live-preview weight snapshots (GUI)."""
    seed: int = 0
    """Seed of pseudo poses, ray sampling and initialisation."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mlp"] = self.mlp.to_dict()
        return d


PRESETS: dict[str, R2LDistillConfig] = {
    # CPU tests: a W64D8 student, 48 pseudo images of 24x24 from the tiny teacher; ~8 s on 2 idle cores.
    "tiny": R2LDistillConfig(
        steps=1000, mlp=VARIANTS["W64D8"], batch_rays=1024, lr=5e-3, lr_warmup_start=5e-4, lr_warmup_steps=50,
        pseudo_images=48, pseudo_size=24, pseudo_per_step=4, finetune_start=0.5, validate_every=250,
        validation_size=32, validation_views=2, checkpoint_every_s=10.0, snapshot_every_s=1.0,
    ),
    # Minutes on a GPU (or a long CPU demo): the W128D22 student (0.91 MFLOPs / ray).
    "quick": R2LDistillConfig(
        steps=10000, mlp=VARIANTS["W128D22"], batch_rays=16384, lr=1e-3, pseudo_images=300, pseudo_size=200,
        pseudo_per_step=1, validate_every=1000,
    ),
    # The acceptance run: W256D88 distilled within 9 minutes on one H100 from a 400x400 lego teacher
    # (400 s of job: pseudo data + training; with start-up, saving and scripts/gpu_r2l.sh's
    # evaluation the whole run fits one 10-minute device command). Measured
    # on the H100 (2026-11-21): the teacher renders a 200x200 image in 27 ms by occupancy-grid
    # marching (164 ms through the NeRF backend's 256 evaluations per ray), so 2000 pseudo images
    # (80M rays) take ~1 min, interleaved with the first 250 steps; a W256D88 step of 65,536 rays
    # (bf16 autocast, fused Adam) takes 23-25 ms (32,768 rays: 19 ms; launch-bound), so the
    # remaining ~5.5 min train ~13k steps. The time budget ends the run (schedules follow elapsed
    # time); fine-tuning on real rays mixed with pseudo rays over the last 25%. On the procedural
    # scene at 200x200 (teacher 31.61 dB) a 270 s run reached 30.93 dB after 8.6k steps.
    "standard": R2LDistillConfig(
        steps=40000, time_budget_s=400.0, mlp=VARIANTS["W256D88"], batch_rays=65536, pseudo_images=2000,
        pseudo_size=200, pseudo_per_step=8, validate_every=1000,
    ),
    # The paper's recipe (R2L, ECCV 2022, Sec. 4): 10k pseudo images at 400x400 rendered by the
    # teacher (24 h on a 2080 Ti in the paper; ~1.4 h here on an H100 at ~0.5 s per image),
    # 1.2M steps on pseudo data + 0.4M steps fine-tuning on real images mixed with pseudo data
    # (1.6M in all), 98,304 rays per step, Adam 5e-4 with 200 warm-up steps from 1e-4 and decay
    # 0.1^((step-200)/500k), hard-example mining 0.2 x 20 batches. Estimated time on one H100
    # (from the measured 27 ms per 200x200 marched teacher image and 23 ms per 65k-ray step):
    # ~20 min of pseudo data (10k x 400x400 by marching; ~1.8 h through the NeRF backend) +
    # 1.6M steps x ~32 ms (98k rays, W256D88, bf16) ~ 14 h; it is resumable, so run it as
    # repeated invocations. Lego: teacher 31.42 dB -> R2L 32.53 dB in the paper.
    "paper": R2LDistillConfig(
        steps=1_600_000, mlp=VARIANTS["W256D88"], batch_rays=98304, lr_decay_steps=500_000,
        pseudo_images=10000, pseudo_size=400, pseudo_per_step=1, finetune_start=0.75,
        finetune_real_fraction=0.5, validate_every=10000, validation_size=400, checkpoint_every_s=600.0,
    ),
}
"""Presets: data, not code branches. ``steps`` is overridden by ``distill --steps``."""


# ================================================================================ pseudo poses
def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _frames_from_forward(eye: torch.Tensor, fwd: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(n, 4, 4) c2w of cameras at ``eye`` (n, 3) looking along ``fwd`` (n, 3), rolled upright
    w.r.t. ``up`` (3,) (the vectorised ``cameras.look_at``)."""
    back = _normalize(-fwd)
    right = torch.linalg.cross(up.expand_as(back), back, dim=-1)
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        alt = torch.tensor([0.0, 1.0, 0.0]) if abs(float(up[1])) < 0.9 else torch.tensor([1.0, 0.0, 0.0])
        right[degenerate] = torch.linalg.cross(alt.expand_as(back[degenerate]), back[degenerate], dim=-1)
    right = _normalize(right)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.eye(4).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, back, eye
    return c2w


def _tilt(dirs: torch.Tensor, max_deg: float, g: torch.Generator) -> torch.Tensor:
    """Rotate unit vectors (n, 3) by random angles uniform over the spherical cap of ``max_deg``."""
    if max_deg <= 0:
        return dirs
    n = dirs.shape[0]
    cos_max = math.cos(math.radians(max_deg))
    cos_t = 1.0 - torch.rand(n, generator=g) * (1.0 - cos_max)
    sin_t = (1.0 - cos_t**2).clamp_min(0).sqrt()
    phi = torch.rand(n, generator=g) * 2 * math.pi
    helper = torch.where((dirs[:, :1].abs() < 0.9), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
    a = _normalize(torch.linalg.cross(dirs, helper, dim=-1))
    b = torch.linalg.cross(dirs, a, dim=-1)
    around = torch.cos(phi)[:, None] * a + torch.sin(phi)[:, None] * b
    return _normalize(cos_t[:, None] * dirs + sin_t[:, None] * around)


def scene_centre(c2w: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The point closest (least squares) to all optical axes; ``fallback`` if they are near parallel."""
    o, f = c2w[:, :3, 3].double(), _normalize(-c2w[:, :3, 2].double())
    proj = torch.eye(3, dtype=torch.float64) - f[:, :, None] * f[:, None, :]  # (N, 3, 3)
    a, b = proj.sum(0), (proj @ o[:, :, None]).sum(0)[:, 0]
    if torch.linalg.cond(a) > 1e4:
        return fallback.float()
    return torch.linalg.solve(a, b).float()


def sample_pseudo_poses(
    c2w: torch.Tensor,
    n: int,
    seed: int,
    forward_facing: bool,
    up: torch.Tensor,
    centre_hint: torch.Tensor,
    look_jitter_deg: float = 0.0,
) -> torch.Tensor:
    """Random camera poses covering the region of the training cameras ``c2w`` (N, 4, 4).

    * Forward-facing scenes (NDC): origins uniform in the bounding box of the training camera
      positions; viewing directions uniform in the cone around the mean viewing direction that
      holds every training camera's (plus ``look_jitter_deg``); upright w.r.t. the mean camera up.
    * Object scenes: the training cameras' scene centre (least-squares meeting point of their
      optical axes). If the cameras lie on a sphere around it (radii within 10%, the Blender
      case), origins are on that sphere (radius uniform in the training range), their direction
      uniform over the band of elevations the training cameras span (w.r.t. ``up``) and over
      the azimuth arc they span (the full circle when no gap exceeds 90 degrees), as R2L's
      theta/phi sampling on the training sphere does; otherwise origins are uniform in the
      bounding box of the training positions, no closer to the centre than the closest camera.
      Cameras look at the centre, tilted by at most the training cameras' own angle off the
      centre (plus ``look_jitter_deg``).

    Deterministic in ``seed``. Returns (n, 4, 4) float32 c2w, OpenGL convention.
    """
    g = torch.Generator().manual_seed(int(seed))
    c2w = c2w.float().cpu()
    up = _normalize(torch.as_tensor(up, dtype=torch.float32))
    pos, fwd = c2w[:, :3, 3], _normalize(-c2w[:, :3, 2])
    if n == 0:
        return torch.zeros(0, 4, 4)
    if forward_facing:
        lo, hi = pos.min(0).values, pos.max(0).values
        eye = lo + torch.rand(n, 3, generator=g) * (hi - lo)
        mean_fwd = _normalize(fwd.mean(0))
        spread = math.degrees(float(torch.acos((fwd @ mean_fwd).clamp(-1, 1)).max()))
        dirs = _tilt(mean_fwd.expand(n, 3).contiguous(), spread + look_jitter_deg, g)
        cam_up = _normalize(c2w[:, :3, 1].mean(0))
        return _frames_from_forward(eye, dirs, cam_up)

    centre = scene_centre(c2w, centre_hint)
    rel = pos - centre
    radius = rel.norm(dim=-1)
    unit = rel / radius[:, None]
    if float(radius.std() / radius.mean().clamp_min(1e-9)) < 0.1 or pos.shape[0] < 4:
        # elevation band (uniform area: uniform in sin(elevation)) and azimuth arc around `up`
        s = (unit @ up).clamp(-1, 1)
        s_lo, s_hi = float(s.min()), float(s.max())
        helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
        e1 = _normalize(torch.linalg.cross(up, helper, dim=0))
        e2 = torch.linalg.cross(up, e1, dim=0)
        az = torch.atan2(unit @ e2, unit @ e1)  # (N,) in (-pi, pi]
        az_sorted, _ = torch.sort(az)
        gaps = torch.cat([az_sorted[1:] - az_sorted[:-1], (az_sorted[:1] + 2 * math.pi) - az_sorted[-1:]])
        k = int(gaps.argmax())
        if float(gaps[k]) <= math.pi / 2 or pos.shape[0] < 2:
            az_start, az_len = -math.pi, 2 * math.pi
        else:  # the arc from the end of the largest gap round to its start
            az_start = float(az_sorted[(k + 1) % az_sorted.numel()])
            az_len = 2 * math.pi - float(gaps[k])
        sz = s_lo + torch.rand(n, generator=g) * (s_hi - s_lo)
        phi = az_start + torch.rand(n, generator=g) * az_len
        ring = (1 - sz**2).clamp_min(0).sqrt()
        dirs = ring[:, None] * (torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2) + sz[:, None] * up
        r = float(radius.min()) + torch.rand(n, generator=g) * float(radius.max() - radius.min())
        eye = centre + r[:, None] * dirs
    else:
        lo, hi = pos.min(0).values, pos.max(0).values
        r_min = float(radius.min())
        eye = torch.empty(0, 3)
        for _ in range(100):  # rejection sampling, vectorised in rounds
            cand = lo + torch.rand(4 * n, 3, generator=g) * (hi - lo)
            eye = torch.cat([eye, cand[(cand - centre).norm(dim=-1) >= r_min]])
            if eye.shape[0] >= n:
                break
        if eye.shape[0] < n:  # degenerate box: fall back to the training positions
            eye = torch.cat([eye, pos[torch.randint(0, pos.shape[0], (n,), generator=g)]])
        eye = eye[:n]
    # look at the centre, tilted within the training views' own spread
    off_centre = torch.acos((fwd * _normalize(centre - pos)).sum(-1).clamp(-1, 1))
    spread = math.degrees(float(off_centre.max())) + look_jitter_deg
    look = _tilt(_normalize(centre - eye), spread, g)
    return _frames_from_forward(eye, look, up)


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
class R2LDistillJob(TimeBudget, TrainingJob):
    """Distils the scene's NeRF teacher into an R2L light field (pseudo data, training, fine-tune)."""

    stage = "r2l"
    POOL_FILE = "r2l_pseudo.safetensors"

    def __init__(self, scene: Scene, data: SceneData, config: R2LDistillConfig, device: torch.device):
        self.scene, self.data, self.config, self.device = scene, data, config, torch.device(device)
        c = config
        if c.steps < 1:
            raise ValueError("r2l: steps must be >= 1")
        if not 0 <= c.hard_fraction < 1 or not 0 <= c.real_fraction <= 1 or not 0 <= c.finetune_real_fraction <= 1:
            raise ValueError("r2l: hard_fraction must be in [0, 1), real fractions in [0, 1]")
        self.total_steps = c.steps
        self.validate_every = c.validate_every
        self.snapshot_every_s = c.snapshot_every_s
        self.checkpoint_every_s = c.checkpoint_every_s
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.steps_done = 0
        torch.manual_seed(c.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
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
        self.student = R2LMLP(c.mlp).to(self.device)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=c.lr_warmup_start, betas=(0.9, 0.999),
                                          eps=1e-8, **({"fused": True} if fused else {}))
        self.amp = c.mixed_precision and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if c.amp_dtype == "bf16" else torch.float16
        if c.amp_dtype not in ("bf16", "fp16"):
            raise ValueError(f"r2l: amp_dtype must be bf16 or fp16, got {c.amp_dtype!r}")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.forward = torch.compile(self.student) if (c.compile and self.device.type == "cuda") else self.student

        # ---- hard examples, pseudo pool
        self.hard = HardExamplePool(int(c.hard_pool_factor * c.batch_rays) if c.hard_fraction > 0 else 0, 9,
                                    self.device, self.generator)
        self.pool = self._make_pool(train)
        self.pool_path = scene.checkpoint_dir / self.POOL_FILE
        self.fingerprint = self._fingerprint()
        if self.pool.load(self.pool_path, self.fingerprint):
            pass  # resumed: only the missing images are rendered
        self.teacher: NerfBackend | None = None
        self.teacher_seconds = 0.0
        self.val_split = data.splits.get("val") or data.splits.get("test") or train
        self.last_val: float | None = None

    # ------------------------------------------------------------------------------- pool
    def _make_pool(self, train: Split) -> PseudoPool:
        c = self.config
        aabb = self.data.aabb.float()
        poses = sample_pseudo_poses(train.c2w, c.pseudo_images, c.seed, self.ndc is not None,
                                    torch.tensor(self.data.up, dtype=torch.float32), aabb.mean(0), c.look_jitter_deg)
        s = c.pseudo_size / max(train.width, train.height)
        width, height = max(1, round(train.width * s)), max(1, round(train.height * s))
        g = torch.Generator().manual_seed(c.seed + 1)
        pick = torch.randint(0, len(train), (c.pseudo_images,), generator=g)
        k = train.intrinsics[pick].float()
        intr = torch.stack([k[:, 0] * width / train.width, k[:, 1] * height / train.height,
                            k[:, 2] * width / train.width, k[:, 3] * height / train.height], -1)
        return PseudoPool(poses, intr, height, width, self.device, self.ndc, self.generator)

    def _fingerprint(self) -> str:
        c = self.config
        entry = self.scene.backends.get("nerf", {})
        weights = self.scene.root / entry.get("weights", "nerf.safetensors")
        size = weights.stat().st_size if weights.exists() else 0
        return (f"teacher={entry.get('updated', '')}:{size};images={c.pseudo_images};size={c.pseudo_size};"
                f"seed={c.seed};jitter={c.look_jitter_deg};renderer={self.march_step_size()};"
                f"dataset={self.data.kind}:{len(self.data.splits['train'])}")

    def _teacher(self) -> NerfBackend:
        if self.teacher is None:
            self.teacher = NerfBackend(self.device)
            self.teacher.load(self.scene)
        return self.teacher

    def march_step_size(self) -> float | None:
        """The teacher's occupancy-marching step if pseudo images are rendered by marching, else None."""
        mode = self.config.pseudo_renderer
        if mode not in ("auto", "march", "backend"):
            raise ValueError(f"r2l: pseudo_renderer must be auto, march or backend, got {mode!r}")
        teacher_cfg = self.scene.backends.get("nerf", {}).get("config", {}).get("teacher", {})
        marched = teacher_cfg.get("sampler") == "occupancy" and self.scene.occupancy is not None
        if mode == "backend" or (mode == "auto" and not marched):
            return None
        if not marched:
            raise TrainingError(f"{self.scene.root}: pseudo_renderer 'march' needs a teacher trained with the "
                                "occupancy sampler and its occupancy grid")
        return float(teacher_cfg.get("render_step_size", 5e-3))

    @torch.no_grad()
    def render_marched(self, cam: Camera, step_size: float) -> torch.Tensor:
        """(H, W, 3) teacher colours by occupancy-grid marching, as the teacher was trained (no jitter)."""
        teacher = self._teacher()
        o, d = camera_rays(cam, self.device)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
        bg = torch.tensor(self.background, device=self.device)
        out = torch.empty_like(o)
        chunk = 1 << 15 if self.device.type == "cuda" else 4096
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda" else nullcontext()
        for a in range(0, o.shape[0], chunk):
            oc, dc = o[a : a + chunk], d[a : a + chunk]
            n = oc.shape[0]
            near = torch.full((n,), float(self.data.near), device=self.device)
            far = torch.full((n,), float(self.data.far), device=self.device)
            ray_ids, t0, t1 = teacher.grid.march(oc, dc, near, far, step_size)
            pts = oc[ray_ids] + (0.5 * (t0 + t1))[:, None] * dc[ray_ids]
            with ctx:
                sig, rgb = teacher.fine(pts, F.normalize(dc, dim=-1)[ray_ids])
            res = composite_packed(sig.float(), rgb.float(), t0, t1, ray_ids, n, dc.norm(dim=-1), bg)
            out[a : a + chunk] = res["rgb"]
        return out.reshape(cam.height, cam.width, 3).clamp(0, 1)

    @torch.no_grad()
    def fill_pool(self, n_images: int) -> int:
        """Render up to ``n_images`` more pseudo images with the teacher; returns how many."""
        pool = self.pool
        todo = min(n_images, len(pool) - pool.done)
        if todo <= 0:
            return 0
        t0 = time.perf_counter()
        teacher = self._teacher()
        step_size = self.march_step_size()
        precision = "fp16" if self.device.type == "cuda" else "fp32"
        for _ in range(todo):
            i = pool.done
            if step_size is not None:
                rgb = self.render_marched(pool.camera(i), step_size)
            else:
                req = RenderRequest.from_camera(pool.camera(i), float(self.data.near), float(self.data.far),
                                                background=self.background, precision=precision)
                rgb = teacher.render(req).rgb
            pool.images[i] = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).to(self.device)
            pool.done += 1
        self.teacher_seconds += time.perf_counter() - t0
        if pool.full:
            pool.save(self.pool_path, self.fingerprint)
            self.teacher = None  # free the teacher's memory
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return todo

    # ------------------------------------------------------------------------------- step
    def lr_at(self, step: int, progress: float | None = None) -> float:
        """R2L's schedule: linear warm-up over the first steps, then exponential decay."""
        c = self.config
        if step < c.lr_warmup_steps:
            return c.lr_warmup_start + (c.lr - c.lr_warmup_start) * step / c.lr_warmup_steps
        s = (self.progress(step) if progress is None else progress) * c.steps
        decay = c.lr_decay_steps or c.steps
        return c.lr * 0.1 ** (max(s - c.lr_warmup_steps, 0.0) / decay)

    def real_fraction_at(self, progress: float) -> float:
        c = self.config
        if self.pool.done == 0:
            return 1.0
        return c.finetune_real_fraction if progress >= c.finetune_start else c.real_fraction

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    def bounds(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.full((n,), self.near, device=self.device), torch.full((n,), self.far, device=self.device))

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        extra = {}
        if not self.pool.full:
            self.fill_pool(c.pseudo_per_step)
            extra["pseudo_images"] = torch.tensor(float(self.pool.done))
        self.steps_done = step + 1
        progress = self.progress(step)
        lr = self.lr_at(step, progress)
        for grp in self.optimizer.param_groups:
            grp["lr"] = lr

        n_hard = int(round(c.hard_fraction * c.batch_rays)) if self.hard.full else 0
        n_fresh = c.batch_rays - n_hard
        n_real = int(round(self.real_fraction_at(progress) * n_fresh))
        parts = []
        if n_real:
            parts.append(self.batcher.sample(n_real))
        if n_fresh - n_real:
            parts.append(self.pool.sample(n_fresh - n_real))
        fresh = torch.cat([torch.cat([o, d, rgb], -1) for o, d, rgb in parts])  # (n_fresh, 9)
        slots, hard_rows = self.hard.draw(n_hard)
        rows = torch.cat([fresh, hard_rows]) if n_hard else fresh
        o, d, target = rows[:, :3], rows[:, 3:6], rows[:, 6:9]
        near, far = self.bounds(rows.shape[0])
        enc = encode_rays(o, d, near, far, c.mlp, perturb=True, generator=self.generator)  # float32
        with self.autocast():
            pred = self.forward(enc)
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

    def render_split_view(self, split: Split, index: int, size: int | None):
        k = split.intrinsics[index]
        cam = Camera(split.c2w[index], split.width, split.height, float(k[0]), float(k[1]), float(k[2]), float(k[3]))
        if size is not None and max(cam.width, cam.height) > size:
            s = size / max(cam.width, cam.height)
            cam = cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        req = RenderRequest.from_camera(cam, self.data.near, self.data.far, background=self.background)
        self.student.eval()
        try:
            return self.backend().render(req), cam
        finally:
            self.student.train()

    def validate(self, views: int | None = None) -> Validation:
        split = self.val_split
        n = min(views or self.config.validation_views, len(split))
        values, first = [], None
        for i in range(n):
            res, cam = self.render_split_view(split, i, self.config.validation_size)
            gt = split.images[i]
            if gt.shape[0] != cam.height or gt.shape[1] != cam.width:
                gt = F.interpolate(gt.permute(2, 0, 1)[None], size=(cam.height, cam.width), mode="area")[0]
                gt = gt.permute(1, 2, 0)
            values.append(psnr(res.rgb, gt))
            if first is None:
                first = (res.rgb, gt)
        to8 = lambda x: (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
        self.last_val = float(np.mean(values))
        return Validation(self.last_val, to8(first[0]), to8(first[1]))

    # ----------------------------------------------------------------------- state & results
    def model_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float() for k, v in self.student.state_dict().items()}

    def model_config(self) -> dict:
        return {"mlp": self.config.mlp.to_dict(), "near": self.near, "far": self.far,
                "ndc": self.ndc is not None, "flops_per_ray": self.student.flops_per_ray(),
                "parameters": self.student.parameter_count(), "distill": self.config.to_dict()}

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        if self.pool.done > self.pool.saved:  # keep the pseudo data with the checkpoint
            self.pool.save(self.pool_path, self.fingerprint)
        return {**module_tensors(self.student, "student"), **optimizer_tensors(self.optimizer),
                "scaler.scale": torch.tensor(float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0),
                "elapsed_s": torch.tensor(self.elapsed(), dtype=torch.float64),
                "teacher_s": torch.tensor(self.teacher_seconds, dtype=torch.float64)}

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
        self.teacher_seconds = float(tensors.get("teacher_s", torch.tensor(0.0)))
        self.started = time.perf_counter()

    def snapshot(self) -> dict:
        state = {k: v.cpu().clone() for k, v in self.model_tensors().items()}
        return {"backend": "r2l", "state": state, "config": self.model_config()}

    def finish(self) -> dict:
        v = self.validate()
        metrics = {"val_psnr": round(v.psnr, 3), "steps": self.steps_done or self.total_steps,
                   "train_seconds": round(self.elapsed(), 1),
                   "teacher_seconds": round(self.teacher_seconds, 1), "pseudo_images": self.pool.done,
                   "pseudo_size": [self.pool.width, self.pool.height], "network": self.config.mlp.name,
                   "flops_per_ray": self.student.flops_per_ray(), "parameters": self.student.parameter_count(),
                   "device": str(self.device)}
        self.scene.save_model("r2l", self.model_tensors(), self.model_config(), {"distill": metrics})
        return metrics

    def close(self) -> None:
        self.teacher = None
