"""Training configurations and presets (data, not code branches).

Presets: ``tiny`` (CPU tests: small network, a few hundred steps), ``quick`` (minutes on a GPU),
``standard`` (the recommended recipe: occupancy-grid teacher, under 9 minutes on an H100 at
400x400), ``long`` (the same over 20 minutes), ``paper`` (the NeRF paper's hierarchical training, 200k steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from models.dictconfig import config_from_dict, config_replace, config_settings, config_to_dict
from models.fields.nerf_mlp import NerfMLPConfig
from models.training.sparse_view import SparseViewConfig


@dataclass(frozen=True)
class ScheduleConfig:
    """The settings every training job shares: when it validates, checkpoints and publishes
    live-preview snapshots, and its seed. A job config holds one as ``schedule``; its settings are
    also addressed by their bare names (``--set validate_every=500``, ``cfg.replace(seed=1)``), as
    configs written before they moved here store them."""

    validate_every: int = 1000
    """Steps between validation renders (0: none during training)."""
    validation_size: int = 0
    """Longest side of validation renders (0: the views' own resolution, as they are tested)."""
    validation_views: int = 4
    """Held-out views validated (spread over the val split, else test, else train)."""
    checkpoint_every_s: float = 60.0
    """Seconds between checkpoints."""
    snapshot_every_s: float = 5.0
    """Seconds between live-preview weight snapshots (GUI)."""
    seed: int = 0
    """Seed of sampling and initialisation."""

    def replace(self, **kw) -> "ScheduleConfig":
        return dataclasses.replace(self, **kw)


class JobConfig:
    """What every training job's config (``TeacherConfig``, ``KiloNerfConfig``, ``R2LDistillConfig``;
    frozen dataclasses with a ``schedule: ScheduleConfig`` field) shares: one dict round trip and
    one ``replace``, both taking the schedule's settings by their bare names as well."""

    FLAT = ("schedule",)
    """Sub-configs whose settings are also top-level names (see ``models.dictconfig``)."""

    def to_dict(self) -> dict:
        """JSON-ready dict (nested: ``{"schedule": {...}, "mlp": {...}, ...}``)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """The config a ``to_dict`` dict describes; also reads the flat dicts of older files
        (``{"seed": 0, "validate_every": 200, ...}``: the schedule's settings at the top level).
        Unknown keys are a ValueError naming them."""
        return config_from_dict(cls, d, cls.__name__, flat=cls.FLAT)

    def replace(self, **changes):
        """A copy with ``changes``: fields, or the schedule's settings by name
        (``cfg.replace(steps=300, validate_every=0)``)."""
        return config_replace(self, changes, type(self).__name__, flat=self.FLAT)

    @classmethod
    def settings(cls) -> dict[str, dataclasses.Field]:
        """Every setting by the names ``replace`` and ``--set`` take (``validate_every`` and
        ``schedule.validate_every`` alike), each mapped to its field."""
        return config_settings(cls, cls.FLAT)


@dataclass(frozen=True)
class TeacherConfig(JobConfig):
    """NeRF teacher fitting."""

    steps: int = 20000
    """Optimisation steps."""
    sampler: str = "occupancy"
    """"occupancy": march an occupancy grid (nerfacc-style, fast); "hierarchical": NeRF's 64 + 128."""
    mlp: NerfMLPConfig = field(default_factory=NerfMLPConfig)
    """Network shape of both the coarse and the fine net."""
    batch_rays: int = 4096
    """Rays per step (initial value when ``target_samples`` adapts it)."""
    target_samples: int = 1 << 18
    """Occupancy sampler: adapt the ray batch so each step evaluates about this many samples."""
    max_batch_rays: int = 1 << 16
    """Upper bound of the adaptive ray batch."""
    coarse_ray_fraction: float = 0.25
    """Occupancy sampler: fraction of each batch's rays that also train the coarse net."""
    time_budget_s: float = 0.0
    """Stop after this many seconds of training (0: no limit). The learning-rate schedule then
    follows progress = max(step / steps, elapsed / time_budget_s), so a time-bounded run still
    decays fully."""
    random_background: bool = True
    """Composite training targets over a random colour each step when the dataset has alpha
    (stops the model from painting the background into the scene; instant-ngp/nerfacc do this)."""
    lr: float = 5e-4
    """Initial Adam learning rate."""
    lr_decay_steps: int = 20000
    """lr = lr * 0.1^(progress * steps / lr_decay_steps) (the reference code uses 500k)."""
    adam_eps: float = 1e-7
    """Adam epsilon (reference code: 1e-7)."""
    precrop_steps: int = 0
    """Sample only the central ``precrop_frac`` of each image for the first steps (Blender: 500)."""
    precrop_frac: float = 0.5
    """Fraction of each image kept during precrop."""
    raw_noise_std: float = 0.0
    """Std of noise added to raw density during training (1.0 for real LLFF scenes)."""
    grid_resolution: int = 128
    """Occupancy-grid resolution (cells per axis)."""
    grid_update_every: int = 16
    """Steps between occupancy-grid updates."""
    grid_warmup_steps: int = 256
    """No skipping before this step (grid all occupied), so early random densities don't prune."""
    grid_threshold: float = 0.01
    """Occupancy threshold on per-step opacity 1 - exp(-sigma * step)."""
    render_step_size: float = 5e-3
    """Marching step in world units for the occupancy sampler."""
    n_coarse: int = 64
    """Hierarchical sampler / rendering: stratified samples."""
    n_fine: int = 128
    """Hierarchical sampler / rendering: importance samples."""
    mixed_precision: bool = True
    """fp16 autocast + grad scaling on CUDA (ignored on CPU)."""
    cuda_graph: bool = False
    """Occupancy sampler on CUDA: pad each step's packed samples to a fixed capacity
    (``target_samples * sample_headroom``) and replay both networks' forward + backward as one
    CUDA graph. Off by default: measured slower than the eager step (H200, lego, 2^18 samples:
    28.8 vs 23.2 ms per step; docs/benchmarks.md). Sparse-view (RegNeRF) training stays eager."""
    sample_headroom: float = 1.25
    """CUDA-graph step: sample capacity over ``target_samples`` (the adaptive batch aims at the
    target; rays whose samples would not fit are left out of that step's loss)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Validation, checkpoint and live-preview intervals, and the seed of ray sampling and
    initialisation. Occupancy teachers are validated as they are trained (``render_marched``),
    which costs a fraction of the NeRF backend's 256 evaluations per ray."""
    sparse: SparseViewConfig | None = None
    """Sparse-view training (keep N views) with optional RegNeRF regularisation; None: all views."""

    @staticmethod
    def sparse_settings(views: int, regularise: bool | str | None) -> SparseViewConfig:
        """Sparse-view settings for ``train --views N [--sparse-reg [MODE]]``: MODE regnerf (also
        ``True``), freenerf or both; without it the same N views are fitted by plain NeRF (the
        baseline the regularisers are compared against). See ``SparseViewConfig.preset``."""
        mode = "regnerf" if regularise is True else (regularise or None)
        return SparseViewConfig.preset(views, mode)


TEACHER_PRESETS: dict[str, TeacherConfig] = {
    "tiny": TeacherConfig(
        steps=600, mlp=NerfMLPConfig(depth=4, width=64, skips=(2,), pos_freqs=6, dir_freqs=2, view_width=32),
        batch_rays=512, target_samples=1 << 14, max_batch_rays=2048, lr=5e-3, lr_decay_steps=3000,
        grid_resolution=32, grid_update_every=8, grid_warmup_steps=64, render_step_size=0.03,
        n_coarse=32, n_fine=32,
        schedule=ScheduleConfig(validate_every=200, validation_size=48, validation_views=2, snapshot_every_s=1.0,
                                checkpoint_every_s=10.0),
    ),
    "quick": TeacherConfig(steps=5000, lr_decay_steps=10000, schedule=ScheduleConfig(validate_every=1000)),
    # 500 s of training keeps the whole `train` process (data loading, final validation and save)
    # under 9 minutes; history of this recipe's runs in docs/benchmarks.md.
    "standard": TeacherConfig(steps=100000, lr_decay_steps=100000, time_budget_s=500.0,
                              schedule=ScheduleConfig(validate_every=2500)),
    # The standard recipe over 20 minutes (the step count is only a cap).
    "long": TeacherConfig(steps=300000, lr_decay_steps=300000, time_budget_s=1200.0,
                          schedule=ScheduleConfig(validate_every=5000)),
    "paper": TeacherConfig(
        steps=200000, sampler="hierarchical", batch_rays=1024, lr_decay_steps=500000, precrop_steps=500,
        schedule=ScheduleConfig(validate_every=10000, checkpoint_every_s=600.0),
    ),
}


def teacher_preset(name: str) -> TeacherConfig:
    try:
        return TEACHER_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset '{name}' (choose from {', '.join(TEACHER_PRESETS)})") from None
