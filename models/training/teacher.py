"""NeRF teacher fitting: occupancy-grid sampler (fast, default) or NeRF's hierarchical sampler."""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from models.backends.base import RenderRequest
from models.backends.nerf import HierarchicalConfig, NerfBackend, clip_to_box, render_hierarchical, render_marched
from models.cameras import Camera, camera_rays, ndc_rays, pixel_rays, sample_pixel_batch
from models.data import SceneData, Split
from models.evaluation import validate_views, validation_indices
from models.fields.nerf_mlp import NerfMLP
from models.occupancy import OccupancyGrid
from models.rendering import composite_packed
from models.scene import Scene
from models.training.configs import TeacherConfig
from models.training.sparse_view import (
    RandomPatchSampler,
    annealed_bounds,
    freq_mask,
    occlusion_points,
    depth_tv_loss,
    mean_view_up,
    depth_with_far_background,
    scene_target,
    select_views,
    smoothness_weight,
)
from models.training.engine import (
    TimeBudget,
    TrainingJob,
    Validation,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    strip_prefix,
)


class RayBatcher:
    """Random rays across all images of a split, kept on the device (images as uint8)."""

    def __init__(self, split: Split, ndc: dict | None, device: torch.device, generator: torch.Generator,
                 base_background: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        # colours kept as uint8 on the device; float images are 4x the memory for no gain
        self.images = (split.images * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).to(device)  # (N, H, W, 3)
        self.alpha = None if split.alpha is None else (split.alpha * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).to(device)
        self.base_background = torch.tensor(base_background, dtype=torch.float32, device=device)
        self.c2w = split.c2w.to(device)
        self.intr = split.intrinsics.to(device)
        self.ndc = ndc
        self.device = device
        self.generator = generator

    def sample(self, n: int, precrop: float = 1.0, background: torch.Tensor | None = None):
        """origins (n, 3), directions (n, 3), target colours (n, 3) in [0, 1].

        With ``background`` (3,) and alpha available, targets are re-composited over it.
        """
        num, h, w = self.images.shape[:3]
        img, u, v = sample_pixel_batch(num, h, w, n, self.generator, self.device, precrop)
        k = self.intr[img]
        o, d = pixel_rays(self.c2w[img], k[:, 0], k[:, 1], k[:, 2], k[:, 3], u, v)
        if self.ndc is not None:
            o, d = ndc_rays(self.ndc["height"], self.ndc["width"], self.ndc["focal"], self.ndc["near"], o, d)
        rgb = self.images[img, v, u].float() / 255.0
        if background is not None and self.alpha is not None:
            a = self.alpha[img, v, u].float()[:, None] / 255.0
            rgb = rgb - (1.0 - a) * self.base_background + (1.0 - a) * background
        return o, d, rgb


class StaticSamples:
    """One training step's rays and packed samples in buffers of fixed shape (CUDA-graph inputs).

    ``capacity`` samples and ``max_rays`` rays, plus one dummy ray (index ``max_rays``) that owns
    the padding samples (zero length, so zero weight). Rays whose samples do not all fit (the ray
    at the cut and every later one) get loss weight 0, so a truncated ray never trains on a
    partial composite. The coarse net sees the first ``coarse_capacity`` samples; its loss covers
    the rays whose samples all lie in that prefix.
    """

    def __init__(self, capacity: int, max_rays: int, coarse_fraction: float, device: torch.device):
        n, r = int(capacity), int(max_rays)
        self.capacity, self.max_rays = n, r
        self.coarse_capacity = max(1, min(n, int(round(n * coarse_fraction))))
        z = dict(device=device, dtype=torch.float32)
        self.pts, self.vd = torch.zeros(n, 3, **z), torch.zeros(n, 3, **z)
        self.t0, self.t1 = torch.zeros(n, **z), torch.zeros(n, **z)
        self.ray_ids = torch.full((n,), r, device=device, dtype=torch.long)
        self.target, self.dn = torch.zeros(r + 1, 3, **z), torch.ones(r + 1, **z)
        self.weight, self.bg = torch.zeros(r + 1, **z), torch.zeros(3, **z)
        self.ray_index = torch.arange(r + 1, device=device)

    def load(self, o, d, target, bg, ray_ids, t0, t1) -> None:
        """Copy a step's rays (R, 3) and packed samples (P,) in; P may exceed the capacity."""
        n_rays, p = o.shape[0], ray_ids.numel()
        if n_rays > self.max_rays:
            raise ValueError(f"{n_rays} rays exceed the static batch of {self.max_rays}")
        n = min(p, self.capacity)
        ids = ray_ids[:n]
        self.ray_ids[:n] = ids
        self.ray_ids[n:] = self.max_rays
        self.pts[:n] = torch.addcmul(o[ids], (0.5 * (t0[:n] + t1[:n]))[:, None], d[ids])
        self.pts[n:] = 0.0
        self.vd[:n] = F.normalize(d, dim=-1)[ids]
        self.t0[:n], self.t1[:n] = t0[:n], t1[:n]
        self.t0[n:], self.t1[n:] = 0.0, 0.0
        self.target[:n_rays] = target
        self.target[n_rays:] = 0.0
        self.dn[:n_rays] = d.norm(dim=-1)
        self.dn[n_rays:] = 1.0
        keep = self.ray_index < n_rays
        if p > n:  # the ray at the cut lost samples, and all rays after it: out of this step's loss
            keep &= self.ray_index < ray_ids[n]
        self.weight.copy_(keep)
        self.bg.copy_(bg)


def nerf_state(coarse: NerfMLP, fine: NerfMLP) -> dict[str, torch.Tensor]:
    return {**module_tensors(coarse, "coarse"), **module_tensors(fine, "fine")}


class TeacherJob(TimeBudget, TrainingJob):
    """Fits the coarse + fine NeRF networks of a scene to its training images."""

    stage = "teacher"

    def __init__(self, scene: Scene, data: SceneData, config: TeacherConfig, device: torch.device):
        self.data, self.scene, self.config, self.device = data, scene, config, torch.device(device)
        c = config
        self.total_steps = c.steps
        self.validate_every = c.schedule.validate_every
        self.snapshot_every_s = c.schedule.snapshot_every_s
        self.checkpoint_every_s = c.schedule.checkpoint_every_s
        torch.manual_seed(c.schedule.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(c.schedule.seed)
        if "train" not in data.splits or len(data.splits["train"]) == 0:
            raise ValueError(f"{data.root}: dataset has no training images")
        train = data.splits["train"]
        self.train_indices = list(range(len(train)))
        self.notes: list[str] = []
        """What the job chose (kept views), for logs."""
        self.patches = None
        if c.sparse is not None:
            if c.sparse.views > len(train):
                raise ValueError(f"--views {c.sparse.views}: the dataset has only {len(train)} training views")
            train, self.train_indices = select_views(train, c.sparse.views)
            self.notes.append(f"sparse views: training on {len(train)} of {len(data.splits['train'])} training "
                              f"images: {', '.join(train.names)}")
            if c.sparse.depth_smoothness:
                self.patches = RandomPatchSampler(train, c.sparse, data.ndc, scene_target(train, data.ndc, data.aabb),
                                                  mean_view_up(train), self.device, self.generator)
        self.batcher = RayBatcher(train, data.ndc, self.device, self.generator, data.background)
        self.elapsed_before = 0.0  # training seconds of earlier (resumed) runs
        self.step_index = 0
        self.coarse = NerfMLP(c.mlp).to(self.device)
        self.fine = NerfMLP(c.mlp).to(self.device)
        # the CUDA-graph step (see TeacherConfig.cuda_graph): occupancy sampler, no RegNeRF terms
        self.use_static = (c.cuda_graph and self.device.type == "cuda" and c.sampler == "occupancy"
                           and c.sparse is None)
        self.static: StaticSamples | None = None
        self.graph = None
        self._graph_out: tuple[torch.Tensor, torch.Tensor] | None = None
        self.optimizer = torch.optim.Adam(
            list(self.coarse.parameters()) + list(self.fine.parameters()), lr=c.lr, betas=(0.9, 0.999), eps=c.adam_eps,
            # one fused kernel (the foreach version took 1.15 ms of a 28 ms step on an H100); with
            # GradScaler it also skips inf steps without a host sync
            fused=True if self.device.type == "cuda" else None,
        )
        self.amp = c.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.background = torch.tensor(data.background, dtype=torch.float32, device=self.device)
        self.aabb = data.aabb.to(self.device).float()
        self.grid = OccupancyGrid(self.aabb, c.grid_resolution, self.device) if c.sampler == "occupancy" else None
        if c.sampler not in ("occupancy", "hierarchical"):
            raise ValueError(f"unknown sampler '{c.sampler}' (occupancy or hierarchical)")
        self.batch_rays = c.batch_rays
        self.sampling = HierarchicalConfig(c.n_coarse, c.n_fine)
        self.started = time.perf_counter()
        self.val_split = data.splits.get("val") or data.splits.get("test") or data.splits["train"]
        self.val_indices = validation_indices(len(self.val_split), c.schedule.validation_views)

    # --------------------------------------------------------------------------------- helpers
    def autocast(self):
        # no weight-cast cache: a CUDA graph must recompute the casts from the updated weights
        return torch.autocast("cuda", dtype=torch.float16, cache_enabled=False) if self.amp else nullcontext()

    def near_far(self, o: torch.Tensor, d: torch.Tensor, step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-ray bounds; during RegNeRF's sample-space annealing, the shrunk interval."""
        n = o.shape[0]
        near, far = float(self.data.near), float(self.data.far)
        if step is not None and self.config.sparse is not None:
            near, far = annealed_bounds(near, far, step, self.config.sparse)
        return torch.full((n,), near, device=self.device), torch.full((n,), far, device=self.device)

    def density_fn(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.fine.density(x).float()

    # ------------------------------------------------------------------------------------ step
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        self.steps_done = step + 1
        lr = c.lr * 0.1 ** (self.progress(step) * c.steps / c.lr_decay_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        warmup = c.grid_warmup_steps
        if c.sparse is not None and c.sparse.anneal_steps > 0:
            # never prune before the annealed interval has reached the whole ray: cells not yet
            # sampled would hold untrained densities and could be pruned for good
            warmup = max(warmup, c.sparse.anneal_steps + c.grid_warmup_steps)
        if self.grid is not None and step >= warmup and step % c.grid_update_every == 0:
            self.grid.update_ema(self.density_fn, c.render_step_size, c.grid_threshold, generator=self.generator)
        precrop = c.precrop_frac if step < c.precrop_steps else 1.0
        self.step_index = step
        if c.sparse is not None and c.sparse.freq_reg:  # FreeNeRF: bands unmasked from low to high
            mask = freq_mask(c.mlp.pos_freqs, self.progress(step), c.sparse.freq_reg_fraction).to(self.device)
            self.coarse.freq_mask = self.fine.freq_mask = None if bool((mask == 1).all()) else mask
        if self.use_static:  # forward + backward already done (a CUDA-graph replay on CUDA)
            loss, psnr_batch, parts = self._static_step(precrop)
        else:
            if self.grid is not None:
                loss, psnr_batch, parts = self._occupancy_step(precrop)
            else:
                loss, psnr_batch, parts = self._hierarchical_step(precrop)
            if self.patches is not None:
                reg = self._depth_smoothness()
                w = smoothness_weight(step, c.sparse)
                loss = loss + w * reg
                parts["depth_tv"] = reg.detach()
            if c.sparse is not None and c.sparse.occlusion_weight > 0:
                occ = self._occlusion()
                loss = loss + c.sparse.occlusion_weight * occ
                parts["occlusion"] = occ.detach()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        if c.sparse is not None and c.sparse.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.coarse.parameters()) + list(self.fine.parameters()),
                                           c.sparse.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach(), "psnr": psnr_batch, **parts}

    def _occupancy_step(self, precrop: float):
        c = self.config
        bg = self.train_background()
        o, d, target = self.batcher.sample(self.batch_rays, precrop, bg if bg is not self.background else None)
        near, far = self.near_far(o, d, self.step_index)
        ray_ids, t0, t1 = self.grid.march(o, d, near, far, c.render_step_size, jitter=True, generator=self.generator)
        n_rays = o.shape[0]
        mid = 0.5 * (t0 + t1)
        pts = o[ray_ids] + mid[:, None] * d[ray_ids]
        vd = F.normalize(d, dim=-1)[ray_ids]
        dn = d.norm(dim=-1)
        with self.autocast():
            sig, rgb = self.fine(pts, vd, c.raw_noise_std)
        out = composite_packed(sig.float(), rgb.float(), t0, t1, ray_ids, n_rays, dn, bg)
        loss_f = F.mse_loss(out["rgb"], target)
        # the coarse net trains on a prefix of the rays (packed samples are sorted by ray)
        n_c = max(1, int(n_rays * c.coarse_ray_fraction))
        k = int(torch.searchsorted(ray_ids, torch.tensor([n_c], device=self.device)).item()) if ray_ids.numel() else 0
        with self.autocast():
            sig_c, rgb_c = self.coarse(pts[:k], vd[:k], c.raw_noise_std)
        out_c = composite_packed(sig_c.float(), rgb_c.float(), t0[:k], t1[:k], ray_ids[:k], n_c, dn[:n_c], bg)
        loss_c = F.mse_loss(out_c["rgb"], target[:n_c])
        # adapt the batch so that each step evaluates about target_samples samples (nerfacc)
        n_samples = max(int(ray_ids.numel()), 1)
        self.batch_rays = int(min(c.max_batch_rays, max(64, self.batch_rays * c.target_samples / n_samples)))
        return loss_f + loss_c, -10.0 * torch.log10(loss_f.detach().clamp_min(1e-10)), {
            "samples_per_ray": torch.tensor(n_samples / n_rays)}

    def _static_step(self, precrop: float):
        """The occupancy step on fixed-shape buffers: forward, losses and backward (gradients in
        the parameters' ``.grad``). On CUDA the whole of it is one CUDA-graph replay; elsewhere
        (tests) the same computation runs eagerly."""
        c = self.config
        bg = self.train_background()
        o, d, target = self.batcher.sample(self.batch_rays, precrop, bg if bg is not self.background else None)
        near, far = self.near_far(o, d, self.step_index)
        ray_ids, t0, t1 = self.grid.march(o, d, near, far, c.render_step_size, jitter=True, generator=self.generator)
        if self.static is None:
            self.static = StaticSamples(int(c.target_samples * c.sample_headroom), c.max_batch_rays,
                                        c.coarse_ray_fraction, self.device)
        self.static.load(o, d, target, bg, ray_ids, t0, t1)
        if self.device.type == "cuda":
            if self.graph is None:
                self._capture()
            self.graph.replay()
            loss, psnr_batch = self._graph_out
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss, psnr_batch = self._static_losses()
            self.scaler.scale(loss).backward()
            loss = loss.detach()
        n_rays, n_samples = o.shape[0], max(int(ray_ids.numel()), 1)
        self.batch_rays = int(min(c.max_batch_rays, max(64, self.batch_rays * c.target_samples / n_samples)))
        return loss, psnr_batch, {"samples_per_ray": torch.tensor(n_samples / n_rays)}

    def _static_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine + coarse photometric loss of the rays in ``self.static`` and the fine PSNR."""
        c, b = self.config, self.static
        r = b.max_rays + 1
        with self.autocast():
            sig, rgb = self.fine(b.pts, b.vd, c.raw_noise_std)
        out = composite_packed(sig.float(), rgb.float(), b.t0, b.t1, b.ray_ids, r, b.dn, b.bg)
        w = b.weight
        loss_f = (((out["rgb"] - b.target) ** 2).sum(-1) * w).sum() / (3.0 * w.sum().clamp_min(1.0))
        nc = b.coarse_capacity
        with self.autocast():
            sig_c, rgb_c = self.coarse(b.pts[:nc], b.vd[:nc], c.raw_noise_std)
        out_c = composite_packed(sig_c.float(), rgb_c.float(), b.t0[:nc], b.t1[:nc], b.ray_ids[:nc], r, b.dn, b.bg)
        counts = torch.zeros(r, dtype=torch.long, device=w.device).index_add_(0, b.ray_ids, torch.ones_like(b.ray_ids))
        w_c = w * (torch.cumsum(counts, 0) <= nc)  # rays whose samples all lie in the coarse prefix
        loss_c = (((out_c["rgb"] - b.target) ** 2).sum(-1) * w_c).sum() / (3.0 * w_c.sum().clamp_min(1.0))
        return loss_f + loss_c, -10.0 * torch.log10(loss_f.detach().clamp_min(1e-10))

    def _capture(self) -> None:
        """Record forward, losses and backward of the static step as a CUDA graph (PyTorch's
        whole-network capture recipe: warm-up on a side stream, gradients allocated by the
        captured backward and overwritten by every replay, so they are never zeroed again)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (cuBLAS handles, autograd, the scaler's scale tensor)
                self.optimizer.zero_grad(set_to_none=True)
                loss, _ = self._static_losses()
                self.scaler.scale(loss).backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, psnr_batch = self._static_losses()
            self.scaler.scale(loss).backward()
        self.graph, self._graph_out = graph, (loss.detach(), psnr_batch)

    def _hierarchical_step(self, precrop: float):
        c = self.config
        bg = self.train_background()
        o, d, target = self.batcher.sample(self.batch_rays, precrop, bg if bg is not self.background else None)
        near, far = self.near_far(o, d, self.step_index)
        if self.data.ndc is None:
            near, far, _ = clip_to_box(o, d, near, far, self.aabb)
        with self.autocast():
            out = render_hierarchical(self.coarse, self.fine, o, d, near, far, bg, self.sampling,
                                      perturb=True, raw_noise_std=c.raw_noise_std, generator=self.generator)
        loss_f = F.mse_loss(out["rgb"].float(), target)
        loss_c = F.mse_loss(out["rgb_coarse"].float(), target)
        return loss_f + loss_c, -10.0 * torch.log10(loss_f.detach().clamp_min(1e-10)), {}

    def train_background(self) -> torch.Tensor:
        """This step's background: random when the data has alpha and the config asks for it."""
        if self.config.random_background and self.batcher.alpha is not None:
            return torch.rand(3, generator=self.generator, device=self.device)
        return self.background

    def _occlusion(self) -> torch.Tensor:
        """FreeNeRF's occlusion loss: mean density at the first samples of this step's rays
        (a fresh draw of rays; densities of both networks)."""
        c = self.config
        o, d, _ = self.batcher.sample(min(self.batch_rays, 4096))
        near, far = self.near_far(o, d, self.step_index)
        pts = occlusion_points(o, d, near, far, c.sparse, self.generator)
        with self.autocast():
            sig = self.fine.density(pts).float().mean() + self.coarse.density(pts).float().mean()
        return sig

    def _depth_smoothness(self) -> torch.Tensor:
        """RegNeRF depth smoothness on random unobserved 8x8 patches (same sampler as training)."""
        c = self.config
        o, d = self.patches.sample()
        near, far = self.near_far(o, d, self.step_index)
        if self.grid is not None:
            ray_ids, t0, t1 = self.grid.march(o, d, near, far, c.render_step_size, jitter=True, generator=self.generator)
            pts = o[ray_ids] + (0.5 * (t0 + t1))[:, None] * d[ray_ids]
            with self.autocast():
                sig, rgb = self.fine(pts, F.normalize(d, dim=-1)[ray_ids])
            out = composite_packed(sig.float(), rgb.float(), t0, t1, ray_ids, o.shape[0], d.norm(dim=-1))
        else:
            if self.data.ndc is None:
                near, far, _ = clip_to_box(o, d, near, far, self.aabb)
            with self.autocast():
                out = render_hierarchical(self.coarse, self.fine, o, d, near, far, None, self.sampling, perturb=True,
                                          generator=self.generator)
        s = c.sparse.patch_size
        depth = depth_with_far_background(out["depth"].float(), out["acc"].float(), far).reshape(-1, s, s)
        return depth_tv_loss(depth)

    # ------------------------------------------------------------------------------ rendering
    def backend(self) -> NerfBackend:
        """A NeRF backend sharing this job's networks (validation and live preview)."""
        b = NerfBackend(self.device, self.sampling)
        b.coarse, b.fine, b.config = self.coarse, self.fine, self.config.mlp
        b.ndc = self.data.ndc
        b.aabb = self.aabb if self.data.ndc is None else None
        b.grid = self.grid if self.grid is not None and self.config.grid_warmup_steps >= 0 else None
        return b

    @torch.no_grad()
    def render_camera(self, cam: Camera) -> torch.Tensor:
        """(H, W, 3) render of one camera for validation: occupancy teachers as they are trained
        (the fine net through the grid, early termination), others through the NeRF backend."""
        if self.grid is None:
            req = RenderRequest.from_camera(cam, self.data.near, self.data.far, background=tuple(self.data.background))
            return self.backend().render(req).rgb
        o, d = camera_rays(cam, self.device)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        if self.data.ndc is not None:
            n = self.data.ndc
            o, d = ndc_rays(n["height"], n["width"], n["focal"], n["near"], o, d)
        near, far = self.near_far(o, d)
        chunk = 1 << 16 if self.device.type == "cuda" else 4096
        rgb = torch.cat([render_marched(self.fine, self.grid, o[a : a + chunk], d[a : a + chunk], near[a : a + chunk],
                                        far[a : a + chunk], self.config.render_step_size, self.background)["rgb"]
                         for a in range(0, o.shape[0], chunk)])
        return rgb.reshape(cam.height, cam.width, 3)

    def validate(self) -> Validation:
        return validate_views(self.render_camera, self.val_split, self.val_indices,
                              self.config.schedule.validation_size)

    # ------------------------------------------------------------------------ state & results
    def model_tensors(self) -> dict[str, torch.Tensor]:
        return nerf_state(self.coarse, self.fine)

    def model_config(self) -> dict:
        return {"mlp": self.config.mlp.to_dict(), "train_views": self.train_indices,
                "sampling": {"n_coarse": self.sampling.n_coarse, "n_fine": self.sampling.n_fine},
                "teacher": self.config.to_dict()}

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        t = {**self.model_tensors(), **optimizer_tensors(self.optimizer),
             "scaler.scale": torch.tensor(float(self.scaler.get_scale()) if self.amp else 1.0),
             "batch_rays": torch.tensor(self.batch_rays), "elapsed_s": torch.tensor(self.elapsed())}
        if self.grid is not None:
            t["grid.occupied"] = self.grid.occupied
            t["grid.density_ema"] = self.grid.density_ema
        return t

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.coarse.load_state_dict({k: v.to(self.device) for k, v in strip_prefix(tensors, "coarse").items()})
        self.fine.load_state_dict({k: v.to(self.device) for k, v in strip_prefix(tensors, "fine").items()})
        load_optimizer_tensors(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()})
        if self.amp and "scaler.scale" in tensors:
            self.scaler.update(float(tensors["scaler.scale"]))
        self.batch_rays = int(tensors.get("batch_rays", torch.tensor(self.batch_rays)))
        self.elapsed_before = float(tensors.get("elapsed_s", torch.tensor(0.0)))
        self.started = time.perf_counter()
        if self.grid is not None and "grid.occupied" in tensors:
            self.grid.occupied = tensors["grid.occupied"].to(self.device).bool()
            self.grid.density_ema = tensors["grid.density_ema"].to(self.device).float()

    def snapshot(self) -> dict:
        state = {k: v.detach().cpu().clone() for k, v in self.model_tensors().items()}
        if self.grid is not None:
            state["occupancy.occupied"] = self.grid.occupied.cpu().clone()
        return {"backend": "nerf", "state": state, "config": self.model_config()}

    def finish(self) -> dict:
        self.coarse.freq_mask = self.fine.freq_mask = None  # the saved networks see every band
        v = self.validate()
        steps = getattr(self, "steps_done", self.total_steps)
        metrics = {"val_psnr": round(v.psnr, 3), "steps": steps, "train_seconds": round(self.elapsed(), 1),
                   "steps_per_s": round(steps / max(self.elapsed(), 1e-9), 2), "device": str(self.device)}
        if self.grid is not None:
            self.scene.save_occupancy(self.grid.occupied, self.config.grid_threshold)
        self.scene.save_model("nerf", self.model_tensors(), self.model_config(), {"teacher": metrics})
        return metrics
