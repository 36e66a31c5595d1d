"""R2L's neural light field (Wang et al., ECCV 2022): one deep residual MLP query per ray.

Ray representation (the paper's Sec. 3.1, ``PointSampler`` + ``PositionalEmbedder`` of the
reference code snap-research/R2L): K points between ``near`` and ``far`` on the ray (evenly
spaced at test time, stratified jitter during training), their xyz concatenated to a 3K vector
and positionally encoded with L frequencies, raw input kept: 16 * 3 * (1 + 2 * 10) = 1008
inputs. The encoding is the project's ``positional_encoding`` applied to the 48-d vector (the
reference code orders the same 1008 features differently; the order is immaterial to an MLP).

Network (the reference code's ``NeRF_v3_2`` with ``--trial.body_arch resmlp --use_residual``
and its default ``--trial.outact none``)::

    head:  Linear(1008 -> W) + ReLU
    body:  (D - 2) / 2 residual blocks, each  x <- x + Linear(ReLU(Linear(x)))
    tail:  Linear(W -> 3) + Sigmoid

D counts the linear layers: W256D88 has 1 + 43 * 2 + 1 = 88 of them, 5,917,187 parameters and
11,789,824 FLOPs per ray (2 per multiply-add), the paper's "5.92M" and "11.79 MFLOPs".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.encoding import encoded_size, positional_encoding
from models.rendering import stratified_samples


@dataclass(frozen=True)
class R2LMLPConfig:
    """Shape of an R2L light-field network and of its ray encoding."""

    width: int = 256
    """Width W of the head output, of every residual block and of the tail input."""
    depth: int = 88
    """Number D of linear layers: head + 2 per residual block + tail (even, >= 2)."""
    n_points: int = 16
    """Points K sampled along each ray between near and far (the paper's 16)."""
    pos_freqs: int = 10
    """Positional-encoding frequencies L (2^0 .. 2^(L-1)); the raw coordinates are kept."""

    def __post_init__(self):
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"R2L depth must be an even number >= 2 (head + 2 per block + tail), got {self.depth}")
        if self.width < 1 or self.n_points < 1 or self.pos_freqs < 0:
            raise ValueError(f"invalid R2L network shape {self}")

    @property
    def n_blocks(self) -> int:
        """Residual blocks of two linear layers: (D - 2) / 2."""
        return (self.depth - 2) // 2

    @property
    def input_dim(self) -> int:
        """Width of the encoded ray: K * 3 * (1 + 2L) (1008 for the paper's K = 16, L = 10)."""
        return encoded_size(3 * self.n_points, self.pos_freqs)

    @property
    def name(self) -> str:
        """The paper's variant name, e.g. "W256D88"."""
        return f"W{self.width}D{self.depth}"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "R2LMLPConfig":
        return R2LMLPConfig(**{k: d[k] for k in ("width", "depth", "n_points", "pos_freqs") if k in d})

    @staticmethod
    def from_name(name: str) -> "R2LMLPConfig":
        """"W256D88" -> R2LMLPConfig(width=256, depth=88)."""
        if name in VARIANTS:
            return VARIANTS[name]
        import re

        m = re.fullmatch(r"W(\d+)D(\d+)", name)
        if not m:
            raise ValueError(f"R2L variant names look like W256D88, got '{name}'")
        return R2LMLPConfig(width=int(m.group(1)), depth=int(m.group(2)))


VARIANTS: dict[str, R2LMLPConfig] = {
    "W256D88": R2LMLPConfig(256, 88),  # the paper's network: 11.79 MFLOPs / ray, 5.92M parameters
    "W181D88": R2LMLPConfig(181, 88),  # the paper's 6-MFLOP variants (its Table 4) ...
    "W256D44": R2LMLPConfig(256, 44),
    "W363D22": R2LMLPConfig(363, 22),
    "W128D22": R2LMLPConfig(128, 22),  # CPU demo / fast GPU preview: 0.91 MFLOPs / ray
    "W64D8": R2LMLPConfig(64, 8),  # tests: 0.18 MFLOPs / ray
}
"""Named network variants (the paper's budgets plus small ones for CPU)."""


# ------------------------------------------------------------------------------ ray encoding
def ray_points(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    n_points: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """K points along each ray: o + t_k d with t from ``stratified_samples`` (near .. far).

    Args:
        origins, dirs: (R, 3) rays (directions un-normalised, camera-space z = -1; NDC rays for
            forward-facing scenes, where near = 0 and far = 1).
        near, far: (R,) bounds.
        perturb: jitter each t_k uniformly within its bin (training) instead of the bin
            edges t_k = near + (far - near) k / (K - 1) (test time).
    Returns:
        (R, K, 3) points.
    """
    t = stratified_samples(near, far, n_points, perturb, generator)  # (R, K)
    return origins[:, None, :] + t[..., None] * dirs[:, None, :]


def encode_rays(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    config: R2LMLPConfig,
    perturb: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The network input of each ray: gamma(x_1, y_1, z_1, ..., x_K, y_K, z_K).

    Always computed in float32 (sin(2^9 x) in fp16 would be noise); cast afterwards.

    Returns:
        (R, config.input_dim) = (R, 1008) for the paper's K = 16, L = 10; layout [48 raw
        coordinates, sin(2^0 p) (48), cos(2^0 p) (48), ..., sin(2^9 p), cos(2^9 p)].
    """
    pts = ray_points(origins.float(), dirs.float(), near.float(), far.float(), config.n_points, perturb, generator)
    return positional_encoding(pts.flatten(1), config.pos_freqs)


# ----------------------------------------------------------------------------------- network
class ResidualBlock(nn.Module):
    """x -> x + fc2(relu(fc1(x))) (the reference code's ResMLP with n_learnable=2, no outact)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class R2LMLP(nn.Module):
    """Encoded ray (R, input_dim) -> colour (R, 3) in [0, 1]."""

    def __init__(self, config: R2LMLPConfig = R2LMLPConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.head = nn.Linear(config.input_dim, w)
        self.blocks = nn.ModuleList([ResidualBlock(w) for _ in range(config.n_blocks)])
        self.tail = nn.Linear(w, 3)

    def trunk(self, enc: torch.Tensor) -> torch.Tensor:
        """Head + residual blocks: (R, input_dim) -> (R, W) features before the tail."""
        x = torch.relu(self.head(enc))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.tail(self.trunk(enc)))

    def forward_rays(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        perturb: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Rays (R, 3) -> colours (R, 3): encode (float32) then one network query per ray."""
        enc = encode_rays(origins, dirs, near, far, self.config, perturb, generator)
        return self(enc.to(self.head.weight.dtype) if not torch.is_autocast_enabled(enc.device.type) else enc)

    def flops_per_ray(self) -> float:
        """FLOPs of one ray query (2 per multiply-add over all linear layers; activations,
        biases, residual adds and the encoding are not counted, as in the paper)."""
        return float(sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear)))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
