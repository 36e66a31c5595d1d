"""The NeRF MLP (Mildenhall et al. 2020, Fig. 7)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.encoding import encoded_size, positional_encoding


@dataclass(frozen=True)
class NerfMLPConfig:
    """Shape of one NeRF network (coarse and fine share it)."""

    depth: int = 8
    """Number of 256-wide layers of the trunk."""
    width: int = 256
    """Width of the trunk."""
    skips: tuple[int, ...] = (4,)
    """Layers after which the encoded input is concatenated again (input re-fed at layer 5)."""
    pos_freqs: int = 10
    """Positional-encoding frequencies for xyz (63-d with the raw input)."""
    dir_freqs: int = 4
    """Positional-encoding frequencies for the view direction (27-d with the raw input)."""
    view_width: int = 128
    """Width of the view-dependent branch."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skips"] = list(self.skips)
        return d

    @staticmethod
    def from_dict(d: dict) -> "NerfMLPConfig":
        d = dict(d)
        d["skips"] = tuple(d.get("skips", (4,)))
        return NerfMLPConfig(**d)


class NerfMLP(nn.Module):
    """(x, d) -> (sigma, rgb). Density from the trunk, colour from feature + encoded direction."""

    def __init__(self, config: NerfMLPConfig = NerfMLPConfig()):
        super().__init__()
        self.config = config
        c = config
        in_pos = encoded_size(3, c.pos_freqs)
        in_dir = encoded_size(3, c.dir_freqs)
        layers = []
        for i in range(c.depth):
            fan_in = in_pos if i == 0 else c.width
            if i - 1 in c.skips:
                fan_in += in_pos
            layers.append(nn.Linear(fan_in, c.width))
        self.trunk = nn.ModuleList(layers)
        self.sigma = nn.Linear(c.width, 1)
        self.feature = nn.Linear(c.width, c.width)
        self.view = nn.Linear(c.width + in_dir, c.view_width)
        self.rgb = nn.Linear(c.view_width, 3)

    def density_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) -> raw density (N,) (before activation) and trunk features (N, W)."""
        enc = positional_encoding(x, self.config.pos_freqs)
        h = enc
        for i, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if i in self.config.skips:
                h = torch.cat([enc, h], -1)
        return self.sigma(h).squeeze(-1), h

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) -> sigma (N,) >= 0 (used by occupancy grids)."""
        raw, _ = self.density_features(x)
        return torch.relu(raw)

    def forward(self, x: torch.Tensor, d: torch.Tensor, raw_noise_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) points, d: (N, 3) unit view directions -> sigma (N,), rgb (N, 3)."""
        raw, h = self.density_features(x)
        if raw_noise_std > 0:
            raw = raw + torch.randn_like(raw) * raw_noise_std
        denc = positional_encoding(d, self.config.dir_freqs)
        v = torch.relu(self.view(torch.cat([self.feature(h), denc], -1)))
        return torch.relu(raw), torch.sigmoid(self.rgb(v))

    def flops_per_sample(self) -> float:
        return float(sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear)))
