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

A second ray representation, ``encoding="planes"``, keeps the single query per ray but replaces
the positional encoding of the points by learned features: the K points are spread over the part
of the ray inside the scene box, each point's feature at every level of a multi-resolution
tri-plane (three axis-aligned feature planes, bilinear lookups, features multiplied across the
three planes as in K-planes) is concatenated, plus the positional encoding of the ray's
Pluecker coordinates (direction and moment). The grids hold most of the scene, so a small
residual MLP suffices and the student converges in minutes instead of days. ``VARIANTS`` names
both kinds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.cameras import ray_aabb
from models.encoding import encoded_size, positional_encoding
from models.fields.feature_planes import FeaturePlanes
from models.rendering import stratified_samples

ENCODINGS = ("pe", "planes")


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
    """Positional-encoding frequencies L (2^0 .. 2^(L-1)); the raw coordinates are kept
    ("pe" encoding)."""
    encoding: str = "pe"
    """Ray representation: "pe" (the paper: positional encoding of the K points between the
    sampling bounds) or "planes" (K points inside the scene box, multi-resolution tri-plane
    features of each, plus the encoded Pluecker coordinates of the ray)."""
    plane_channels: int = 8
    """"planes": feature channels per level."""
    plane_resolutions: tuple[int, ...] = (64, 128, 256, 512)
    """"planes": side of the square feature planes of each level."""
    ray_freqs: int = 4
    """"planes": positional-encoding frequencies of the 6 Pluecker coordinates of the ray."""
    mask_resolution: int = 0
    """"planes": side of a binary occupancy mask over the feature box (0: no mask). Points in
    mask cells that the teacher's occupancy grid (grown by one voxel) leaves empty get zero
    features, in training and rendering alike, so their texels are neither read nor trained."""

    def __post_init__(self):
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"R2L depth must be an even number >= 2 (head + 2 per block + tail), got {self.depth}")
        if self.width < 1 or self.n_points < 1 or self.pos_freqs < 0:
            raise ValueError(f"invalid R2L network shape {self}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"R2L encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        object.__setattr__(self, "plane_resolutions", tuple(int(r) for r in self.plane_resolutions))
        if self.encoding == "planes" and (self.plane_channels < 1 or not self.plane_resolutions
                                          or min(self.plane_resolutions) < 2 or self.ray_freqs < 0):
            raise ValueError(f"invalid R2L feature planes {self}")
        if self.mask_resolution and (self.encoding != "planes" or not 2 <= self.mask_resolution <= 512):
            raise ValueError(f"an R2L occupancy mask needs the planes encoding and 2 to 512 cells a side, got "
                             f"{self.mask_resolution} ({self.encoding})")

    @property
    def n_blocks(self) -> int:
        """Residual blocks of two linear layers: (D - 2) / 2."""
        return (self.depth - 2) // 2

    @property
    def point_features(self) -> int:
        """Features of one point: 3 * (1 + 2L) ("pe") or channels x levels ("planes")."""
        if self.encoding == "planes":
            return self.plane_channels * len(self.plane_resolutions)
        return 3 * (1 + 2 * self.pos_freqs)

    @property
    def ray_features(self) -> int:
        """Features of the ray itself ("planes": the encoded Pluecker coordinates; "pe": none)."""
        return encoded_size(6, self.ray_freqs) if self.encoding == "planes" else 0

    @property
    def input_dim(self) -> int:
        """Width of the encoded ray: K * 3 * (1 + 2L) (1008 for the paper's K = 16, L = 10), or
        K * channels * levels + 6 * (1 + 2 ray_freqs) for feature planes."""
        if self.encoding == "planes":
            return self.n_points * self.point_features + self.ray_features
        return encoded_size(3 * self.n_points, self.pos_freqs)

    @property
    def name(self) -> str:
        """The variant name: the paper's "W256D88", or e.g. "P8x4-512-K32-W256D12" for planes
        (8 channels x 4 levels up to 512 x 512 texels, 32 points, residual MLP W256D12)."""
        if self.encoding == "planes":
            return (f"P{self.plane_channels}x{len(self.plane_resolutions)}-{max(self.plane_resolutions)}"
                    f"-K{self.n_points}-W{self.width}D{self.depth}"
                    + (f"-M{self.mask_resolution}" if self.mask_resolution else ""))
        return f"W{self.width}D{self.depth}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plane_resolutions"] = list(self.plane_resolutions)
        return d

    @staticmethod
    def from_dict(d: dict) -> "R2LMLPConfig":
        from models.dictconfig import config_from_dict

        return config_from_dict(R2LMLPConfig, d, "R2L network shape")

    @staticmethod
    def from_name(name: str) -> "R2LMLPConfig":
        """"W256D88" -> R2LMLPConfig(width=256, depth=88); "P8x4-512-K32-W256D12" -> feature planes
        of 8 channels at 4 levels halving from 512 (64, 128, 256, 512), 32 points, W256D12; a
        suffix "-M128" adds a 128^3 occupancy mask; names of ``VARIANTS`` as listed."""
        if name in VARIANTS:
            return VARIANTS[name]
        import re

        m = re.fullmatch(r"W(\d+)D(\d+)", name)
        if m:
            return R2LMLPConfig(width=int(m.group(1)), depth=int(m.group(2)))
        m = re.fullmatch(r"P(\d+)x(\d+)-(\d+)-K(\d+)-W(\d+)D(\d+)(?:-M(\d+))?", name)
        if m:
            c, levels, top, k, w, d = (int(g) for g in m.groups()[:6])
            if not 1 <= levels <= 8 or top >> (levels - 1) < 2:
                raise ValueError(f"R2L variant {name}: need 1 to 8 levels, each of at least 2 texels")
            return R2LMLPConfig(w, d, n_points=k, encoding="planes", plane_channels=c,
                                plane_resolutions=tuple(top >> (levels - 1 - i) for i in range(levels)),
                                mask_resolution=int(m.group(7) or 0))
        raise ValueError(f"R2L variant names look like W256D88, P8x4-512-K32-W256D12[-M128] or one of "
                         f"{', '.join(VARIANTS)}, got '{name}'")


VARIANTS: dict[str, R2LMLPConfig] = {
    "W256D88": R2LMLPConfig(256, 88),  # the paper's network: 11.79 MFLOPs / ray, 5.92M parameters
    "W181D88": R2LMLPConfig(181, 88),  # the paper's 6-MFLOP variants (its Table 4) ...
    "W256D44": R2LMLPConfig(256, 44),
    "W363D22": R2LMLPConfig(363, 22),
    "W128D22": R2LMLPConfig(128, 22),  # CPU demo / fast GPU preview: 0.91 MFLOPs / ray
    "W64D8": R2LMLPConfig(64, 8),  # tests: 0.18 MFLOPs / ray
    # feature planes (levels 64..512, 8 channels: 8.4M texel features) + a small residual MLP.
    # The default of the GPU presets: 128 points per ray inside a 128^3 occupancy mask built from the
    # teacher's grid (empty-space points get zero features and train no texels), 1.8 dB ahead of
    # K64-M128 and 2.7 dB ahead of the unmasked K64 after 69 s of distillation (docs/benchmarks.md)
    "P8x4-512-K128-W256D12-M128": R2LMLPConfig(256, 12, n_points=128, encoding="planes", plane_channels=8,
                                               plane_resolutions=(64, 128, 256, 512), mask_resolution=128),
    "P8x4-512-K64-W256D12-M128": R2LMLPConfig(256, 12, n_points=64, encoding="planes", plane_channels=8,
                                              plane_resolutions=(64, 128, 256, 512), mask_resolution=128),
    # unmasked: 64 points converge 1.2-1.5 dB ahead of 32 at equal training time
    "P8x4-512-K64-W256D12": R2LMLPConfig(256, 12, n_points=64, encoding="planes", plane_channels=8,
                                         plane_resolutions=(64, 128, 256, 512)),
    "P8x4-512-K32-W256D12": R2LMLPConfig(256, 12, n_points=32, encoding="planes", plane_channels=8,
                                         plane_resolutions=(64, 128, 256, 512)),
    # the same at CPU scale (levels 16..128): tests and the bundled demo
    "P8x4-128-K32-W128D8": R2LMLPConfig(128, 8, n_points=32, encoding="planes", plane_channels=8,
                                        plane_resolutions=(16, 32, 64, 128)),
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
def box_segments(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                 box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The part [t0, t1] of each ray inside ``box`` (2, 3) and the bounds; rays that miss the box
    get t0 = t1 (their points then lie outside the box, where every feature is zero)."""
    t0, t1 = ray_aabb(origins, dirs, box)
    t0 = torch.maximum(t0, near)
    t1 = torch.minimum(t1, far)
    t0 = torch.minimum(t0, far)
    return t0, torch.maximum(t1, t0)


class _ResidualStackFn(torch.autograd.Function):
    """x_{i+1} = x_i + W2_i relu(W1_i x_i + b1_i) + b2_i for all blocks, with a hand-written backward.

    The same function as the blocks' ``forward``; what differs is the work, for training. The
    second biases are carried as one running sum c_i = b2_0 + ... + b2_{i-1} instead of being added
    after every block: the stack computes x'_i = x_i - c_i, whose update x'_{i+1} = x'_i +
    W2_i relu(W1_i x'_i + b1_i + W1_i c_i) has no bias add of its own, and adds c once at the end.
    So a block is two products: bias and ReLU in the first one's epilogue
    (``torch._addmm_activation``), the residual in the second one's accumulator. The backward
    needs no change beyond W1's gradient, da^T x_i = da^T x'_i + (column sums of da) c_i^T; the
    bias gradients are matrix-vector products with a ones vector instead of column reductions
    (which ran at a tenth of the memory bandwidth for 64k x 256 bf16 gradients on an H200: 35% of
    a W256D88 step), the incoming gradient is updated in place, and one autograd node serves the
    whole stack (one node per block made the step CPU-bound). Takes the stacked weights (NB, W, W)
    and biases (NB, W) in the compute dtype; saves every block's shifted input and hidden
    activation.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        nb = w1.shape[0]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        total = torch.cumsum(b2.to(acc), 0)  # (NB, W): b2_0 + ... + b2_i
        before = torch.cat([torch.zeros_like(total[:1]), total[:-1]])  # c_i, the sum before block i
        b1_eff = (b1.to(acc) + torch.bmm(w1.to(acc), before.unsqueeze(-1)).squeeze(-1)).to(x.dtype)
        fused_relu = x.device.type in ("cuda", "cpu")  # the devices with an addmm + ReLU kernel
        xs, hs = [], []
        for i in range(nb):
            xs.append(x)
            h = (torch._addmm_activation(b1_eff[i], x, w1[i].t()) if fused_relu
                 else torch.relu_(torch.addmm(b1_eff[i], x, w1[i].t())))
            hs.append(h)
            x = torch.addmm(x, h, w2[i].t())
        ctx.save_for_backward(w1, w2, before, *xs, *hs)
        return x + total[-1].to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        w1, w2, before, *saved = ctx.saved_tensors
        nb = w1.shape[0]
        xs, hs = saved[:nb], saved[nb:]
        g = g.to(w1.dtype).contiguous().clone()  # updated in place below
        ones = torch.ones(1, g.shape[0], device=g.device, dtype=g.dtype)
        dw1, db1, dw2, db2 = (torch.empty_like(w1), torch.empty(nb, w1.shape[1], device=g.device, dtype=g.dtype),
                              torch.empty_like(w2), torch.empty(nb, w2.shape[1], device=g.device, dtype=g.dtype))
        for i in reversed(range(nb)):
            h, x = hs[i], xs[i]
            torch.mm(g.t(), h, out=dw2[i])
            torch.mm(ones, g, out=db2[i : i + 1])
            da = torch.ops.aten.threshold_backward(g @ w2[i], h, 0)
            torch.mm(da.t(), x, out=dw1[i])
            torch.mm(ones, da, out=db1[i : i + 1])
            g.addmm_(da, w1[i])
        # W1's gradient against the unshifted inputs x_i = x'_i + c_i
        dw1 = (dw1.to(before.dtype) + db1.to(before.dtype).unsqueeze(-1) * before.unsqueeze(1)).to(w1.dtype)
        return g, dw1, db1, dw2, db2


def residual_stack(x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
    """The residual blocks applied to x (R, W) through ``_ResidualStackFn`` (training), in the
    autocast dtype when autocast is on."""
    if len(blocks) == 0:
        return x
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    w1 = torch.stack([b.fc1.weight for b in blocks]).to(dtype)
    b1 = torch.stack([b.fc1.bias for b in blocks]).to(dtype)
    w2 = torch.stack([b.fc2.weight for b in blocks]).to(dtype)
    b2 = torch.stack([b.fc2.bias for b in blocks]).to(dtype)
    with torch.autocast(dev, enabled=False):
        return _ResidualStackFn.apply(x.to(dtype), w1, b1, w2, b2)


class ResidualBlock(nn.Module):
    """x -> x + fc2(relu(fc1(x))) (the reference code's ResMLP with n_learnable=2, no outact)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class R2LMLP(nn.Module):
    """Ray -> colour (R, 3) in [0, 1]: ``encode`` (R, input_dim), then the residual MLP (``forward``).

    With feature planes the module also holds the planes and the box they cover (the buffer
    ``box``, (2, 3) min / max corner, saved with the weights).
    """

    def __init__(self, config: R2LMLPConfig = R2LMLPConfig()):
        super().__init__()
        self.config = config
        w = config.width
        if config.encoding == "planes":
            self.planes = FeaturePlanes(config.plane_channels, config.plane_resolutions)
            self.register_buffer("box", torch.tensor([[-1.0] * 3, [1.0] * 3]))
        if config.mask_resolution:
            r = config.mask_resolution
            self.register_buffer("mask", torch.ones(r, r, r, dtype=torch.uint8))  # (x, y, z) cells of the box
        self.head = nn.Linear(config.input_dim, w)
        self.blocks = nn.ModuleList([ResidualBlock(w) for _ in range(config.n_blocks)])
        self.tail = nn.Linear(w, 3)

    def set_box(self, box: torch.Tensor) -> None:
        """The scene box (2, 3) the feature planes span ("planes" encoding)."""
        self.box.copy_(torch.as_tensor(box, dtype=torch.float32))

    def set_mask_from_occupancy(self, occupied: torch.Tensor, aabb: torch.Tensor, grow: int = 1) -> float:
        """Build the occupancy mask from a teacher's grid ``occupied`` (X, Y, Z) bool over ``aabb``
        (2, 3): a mask cell is kept when the grid, grown by ``grow`` voxels, is occupied at any of
        the 8 points at a quarter and three quarters of the cell along each axis (mask cells and
        grid voxels are about the same size, and the growth covers the gaps). Returns the kept
        fraction of the mask cells."""
        r = self.config.mask_resolution
        occ = occupied.float()[None, None]
        if grow:
            occ = F.max_pool3d(occ, 2 * grow + 1, stride=1, padding=grow)
        box = self.box.float().cpu()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).cpu()
        keep = torch.zeros(r, r, r, dtype=torch.bool)
        ax = (torch.arange(r, dtype=torch.float32) + 0.5) / r  # cell centres in [0, 1] of the box
        for off in torch.cartesian_prod(*[torch.tensor([-0.25, 0.25])] * 3):
            u = [(ax + off[i] / r) * (box[1, i] - box[0, i]) + box[0, i] for i in range(3)]  # world coordinates
            g = [2 * (u[i] - aabb[0, i]) / (aabb[1, i] - aabb[0, i]) - 1 for i in range(3)]  # grid's [-1, 1]
            gx, gy, gz = torch.meshgrid(*g, indexing="ij")
            # grid_sample's last coordinate axis is (W, H, D) = (z, y, x) of the (X, Y, Z) grid
            pts = torch.stack([gz, gy, gx], -1)[None]
            keep |= F.grid_sample(occ.cpu(), pts, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[0, 0] > 0
        self.mask.copy_(keep.to(self.mask.device, torch.uint8))
        return float(keep.float().mean())

    def mask_at(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: points x (N, 3) in the box's [-1, 1] coordinates whose mask cell is kept."""
        r = self.config.mask_resolution
        i = torch.floor((x + 1.0) * (0.5 * r)).long()
        inside = ((i >= 0) & (i < r)).all(-1)
        i = i.clamp(0, r - 1)
        return inside & (self.mask[i[:, 0], i[:, 1], i[:, 2]] > 0)

    def half_mlp(self) -> "R2LMLP":
        """A copy for fp16 inference: the MLP in float16; feature planes and box stay float32
        (lookup coordinates in fp16 would be off by a quarter of a finest-level cell)."""
        import copy

        out = copy.deepcopy(self)
        for m in [out.head, out.tail, *out.blocks]:
            m.half()
        return out

    def grid_parameters(self) -> list[nn.Parameter]:
        """The feature planes (trained with their own learning rate); empty for "pe"."""
        return [self.planes.table] if self.config.encoding == "planes" else []

    def mlp_parameters(self) -> list[nn.Parameter]:
        grid = {id(p) for p in self.grid_parameters()}
        return [p for p in self.parameters() if id(p) not in grid]

    def encode(self, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
               perturb: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rays (R, 3) and bounds (R,) -> network input (R, input_dim), float32."""
        cfg = self.config
        if cfg.encoding == "pe":
            return encode_rays(origins, dirs, near, far, cfg, perturb, generator)
        o, d = origins.float(), dirs.float()
        box = self.box.float()
        centre, half = 0.5 * (box[0] + box[1]), (0.5 * (box[1] - box[0])).clamp_min(1e-6)
        t0, t1 = box_segments(o, d, near.float(), far.float(), box)
        t = stratified_samples(t0, t1, cfg.n_points, perturb, generator)  # (R, K)
        x = ((o[:, None, :] + t[..., None] * d[:, None, :]) - centre) / half  # (R, K, 3) in [-1, 1] inside
        pts = x.reshape(-1, 3)
        if cfg.mask_resolution:  # only the points in kept cells are looked up (and trained)
            idx = torch.nonzero(self.mask_at(pts)).squeeze(1)
            feats = torch.zeros(pts.shape[0], cfg.point_features, device=pts.device, dtype=torch.float32)
            feats = feats.index_put((idx,), self.planes(pts[idx]).float())
            feats = feats.reshape(o.shape[0], -1)
        else:
            feats = self.planes(pts).float().reshape(o.shape[0], -1)  # (R, K * C * L)
        on, dn = (o - centre) / half, F.normalize(d / half, dim=-1)
        ray = positional_encoding(torch.cat([dn, torch.linalg.cross(on, dn, dim=-1)], -1), cfg.ray_freqs)
        return torch.cat([feats, ray], -1)

    def trunk(self, enc: torch.Tensor) -> torch.Tensor:
        """Head + residual blocks: (R, input_dim) -> (R, W) features before the tail.

        While gradients are recorded the blocks run as one ``residual_stack`` (same function,
        less work in backward); inference uses the modules one by one."""
        x = torch.relu(self.head(enc))
        if torch.is_grad_enabled() and x.dim() == 2:
            return residual_stack(x, self.blocks)
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
        enc = self.encode(origins, dirs, near, far, perturb, generator)
        return self(enc.to(self.head.weight.dtype) if not torch.is_autocast_enabled(enc.device.type) else enc)

    def flops_per_ray(self) -> float:
        """FLOPs of one ray query (2 per multiply-add over all linear layers; activations,
        biases, residual adds and the encoding (for planes: K x levels x 3 bilinear lookups)
        are not counted, as in the paper)."""
        return float(sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear)))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
