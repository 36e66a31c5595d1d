"""Teacher-labelled rays for distilling a light field: the fastest teacher of a scene, and an
online source of fresh rays from random poses at the training images' pixel density.

R2L (Sec. 3.2) distils from a fixed set of pseudo images rendered by the teacher before training.
``OnlineRays`` instead renders every step's rays fresh: random poses drawn from the region of the
training cameras (``sample_pseudo_poses``), random continuous pixel positions at the training
resolution, labelled by ``TeacherRays``, which uses the fastest renderer the scene has: its
distilled KiloNeRF (tiny networks, empty-space skipping), else the NeRF teacher's fine network
marched through its occupancy grid with early termination (``render_marched``), else the NeRF
backend's hierarchical sampling. A replay buffer lets a slow teacher label only part of each
batch: the rest is drawn from the last rays it labelled.
"""

from __future__ import annotations

import math
import time

import torch

from models.backends.nerf import NerfBackend, render_marched
from models.cameras import ndc_rays, pixel_rays
from models.data import SceneData, Split
from models.scene import Scene
from models.training.engine import TrainingError

TEACHERS = ("auto", "kilonerf", "march", "backend")


def teacher_kind(scene: Scene, requested: str) -> str:
    """Which renderer labels the rays: "kilonerf", "march" or "backend" (see ``TEACHERS``)."""
    if requested not in TEACHERS:
        raise ValueError(f"r2l: pseudo_renderer must be one of {', '.join(TEACHERS)}, got {requested!r}")
    teacher_cfg = scene.backends.get("nerf", {}).get("config", {}).get("teacher", {})
    marchable = teacher_cfg.get("sampler") == "occupancy" and scene.occupancy is not None
    if requested == "kilonerf" and "kilonerf" not in scene.backends:
        raise TrainingError(f"{scene.root}: pseudo_renderer 'kilonerf' needs a distilled KiloNeRF (distill it first)")
    if requested == "march" and not marchable:
        raise TrainingError(f"{scene.root}: pseudo_renderer 'march' needs a teacher trained with the occupancy "
                            "sampler and its occupancy grid")
    if requested != "auto":
        return requested
    if "kilonerf" in scene.backends:
        return "kilonerf"
    return "march" if marchable else "backend"


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



class TeacherRays:
    """Colours of arbitrary rays from the scene's teacher (no gradients; fp16 on CUDA)."""

    def __init__(self, scene: Scene, data: SceneData, device: torch.device, kind: str = "auto",
                 chunk: int | None = None):
        self.scene, self.device = scene, torch.device(device)
        self.kind = teacher_kind(scene, kind)
        self.background = torch.tensor([float(x) for x in data.background], device=self.device)
        self.near, self.far = float(data.near), float(data.far)
        teacher_cfg = scene.backends.get("nerf", {}).get("config", {}).get("teacher", {})
        self.step_size = float(teacher_cfg.get("render_step_size", 5e-3))
        self.chunk = chunk or (1 << 16 if self.device.type == "cuda" else 4096)
        self.backend = None
        self.seconds = 0.0
        """Wall time spent labelling rays (host clock around synchronised calls)."""
        self.rays = 0
        """Rays labelled so far."""

    def _load(self):
        if self.backend is None:
            if self.kind == "kilonerf":
                from models.backends.kilonerf import KiloNerfBackend

                self.backend = KiloNerfBackend(self.device)
            else:
                self.backend = NerfBackend(self.device)
            self.backend.load(self.scene)
        return self.backend

    @torch.no_grad()
    def __call__(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """origins, dirs (R, 3) (NDC for forward-facing scenes) -> rgb (R, 3) in [0, 1]."""
        if self.device.type == "cuda":  # time the teacher alone, not the student's queued work
            torch.cuda.synchronize(self.device)
        t_start = time.perf_counter()
        b = self._load()
        out = torch.empty(origins.shape[0], 3, device=self.device)
        half = self.device.type == "cuda"
        ndc = self.scene.ndc is not None
        for a in range(0, origins.shape[0], self.chunk):
            o, d = origins[a : a + self.chunk], dirs[a : a + self.chunk]
            near = torch.full((o.shape[0],), 0.0 if ndc else self.near, device=self.device)
            far = torch.full((o.shape[0],), 1.0 if ndc else self.far, device=self.device)
            if self.kind == "march":
                rgb = render_marched(b.fine, b.grid, o, d, near, far, self.step_size, self.background)["rgb"]
            else:
                rgb = b.render_rays(o, d, near, far, self.background, frozenset({"rgb"}), half)["rgb"]
            out[a : a + self.chunk] = rgb.float().clamp(0, 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t_start
        self.rays += origins.shape[0]
        return out

    def close(self) -> None:
        self.backend = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class RandomViewRays:
    """Rays from random poses at the training images' resolution and intrinsics.

    A bank of ``bank_size`` poses is drawn once (``sample_pseudo_poses``, deterministic in the
    seed); every ray takes a random pose of the bank, the intrinsics of a random training image,
    and a continuous uniform position in the image plane, so no two rays repeat.
    """

    def __init__(self, train: Split, poses: torch.Tensor, ndc: dict | None, device: torch.device,
                 generator: torch.Generator):
        self.c2w = poses.float().to(device)  # (P, 4, 4)
        self.intr = train.intrinsics.float().to(device)  # (N, 4) fx, fy, cx, cy
        self.width, self.height = train.width, train.height
        self.ndc = ndc
        self.device = device
        self.generator = generator

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g, dev = self.generator, self.device
        pose = torch.randint(0, self.c2w.shape[0], (n,), generator=g, device=dev)
        k = self.intr[torch.randint(0, self.intr.shape[0], (n,), generator=g, device=dev)]
        # pixel_rays adds 0.5 (pixel centres): continuous u in [0, W) becomes u - 0.5
        u = torch.rand(n, generator=g, device=dev) * self.width - 0.5
        v = torch.rand(n, generator=g, device=dev) * self.height - 0.5
        o, d = pixel_rays(self.c2w[pose], k[:, 0], k[:, 1], k[:, 2], k[:, 3], u, v)
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
        return o, d


class OnlineRays:
    """Fresh teacher-labelled rays every step, with an optional replay buffer.

    Without a buffer (or with ``fresh`` >= the batch) ``sample(n)`` labels ``n`` new rays: every
    ray is used exactly once. With a buffer larger than the batch, the teacher labels ``fresh``
    rays per step on average, in calls of at least ``chunk`` rays (a teacher call has a fixed
    cost, so labelling a thousand rays a step would waste most of the teacher's time), and the
    batch is drawn uniformly from the buffer, which always holds the newest rays. Rows are
    (origin, direction, colour): 9 floats.
    """

    def __init__(self, views: RandomViewRays, teacher: TeacherRays, fresh: int = 0, buffer: int = 0,
                 chunk: int = 1 << 16):
        self.views, self.teacher = views, teacher
        self.fresh = int(fresh)
        self.capacity = int(buffer)
        self.chunk = max(1, int(chunk))
        self.buffer = torch.zeros(self.capacity, 9, device=views.device) if self.capacity else None
        self.size = 0
        self.head = 0
        self.credit = 0.0
        """Rays owed to the buffer by past steps, labelled once a chunk's worth has accrued."""

    def label(self, n: int) -> torch.Tensor:
        o, d = self.views.sample(n)
        return torch.cat([o, d, self.teacher(o, d)], -1)

    def _push(self, rows: torch.Tensor) -> None:
        m = rows.shape[0]
        idx = (self.head + torch.arange(m, device=rows.device)) % self.capacity
        self.buffer[idx] = rows
        self.head = (self.head + m) % self.capacity
        self.size = min(self.capacity, self.size + m)

    def sample(self, n: int) -> torch.Tensor:
        fresh = min(self.fresh or n, n)
        if self.buffer is None or self.capacity <= n or fresh >= n:
            return self.label(n)
        if self.size < n:  # filling up: label a batch at once
            self._push(self.label(n - self.size))
        else:
            self.credit += fresh
            if self.credit >= min(self.chunk, self.capacity):
                m = int(self.credit)
                self._push(self.label(m))
                self.credit -= m
        pick = torch.randint(0, self.size, (n,), generator=self.views.generator, device=self.views.device)
        return self.buffer[pick]

    @property
    def teacher_seconds(self) -> float:
        return self.teacher.seconds


def fresh_rays_for_budget(batch: int, teacher_rays_per_s: float, student_rays_per_s: float,
                          teacher_share: float) -> int:
    """Fresh rays per step so that labelling takes about ``teacher_share`` of each step.

    With a step of B rays costing B / s seconds of training and f fresh rays f / t seconds of
    teacher, f / t = share * (f / t + B / s) gives f = share / (1 - share) * B * t / s.
    """
    if teacher_share >= 1 or teacher_rays_per_s <= 0 or student_rays_per_s <= 0:
        return batch
    f = teacher_share / max(1e-9, 1.0 - teacher_share) * batch * teacher_rays_per_s / student_rays_per_s
    return int(min(batch, max(1024, round(f / 1024) * 1024)))

