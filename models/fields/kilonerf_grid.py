"""KiloNeRF's field: a uniform grid of tiny MLPs over a box (Reiser et al., ICCV 2021).

Each occupied cell of an ``nx x ny x nz`` grid owns one tiny network (cells without occupied
voxels own none; ``cell_to_net`` holds -1 there). One network, with PE 10/4 (63-d position,
27-d direction)::

    h1  = relu(W1 gamma(x) + b1)          63 -> 32
    h2  = relu(W2 h1 + b2)                32 -> 32
    o3  = W3 h2 + b3                      32 -> 1 + 32     (raw density, 32-d feature)
    h4  = relu(W4 [o3[1:], gamma(d)] + b4)  32 + 27 -> 32  (view-dependent)
    rgb = sigmoid(W5 h4 + b5)             32 -> 3          (view-dependent)
    sigma = relu(o3[0])

Parameters per network: (63*32 + 32) + (32*32 + 32) + (32*33 + 33) + (59*32 + 32) + (32*3 + 3)
= 2048 + 1056 + 1089 + 1920 + 99 = 6,212 (the paper's count). Multiply-adds per sample:
63*32 + 32*32 + 32*33 + 59*32 + 32*3 = 6,080, i.e. 12,160 FLOPs.

``x`` is the point in its cell's *local* coordinates: the cell spans [-1, 1]^3.

Batched evaluation (never a Python loop over networks): all parameters are stacked along a
leading network axis (``w1`` is (M, 63, 32), ...). Points are grouped by network with one sort,
each network's points are cut into tiles of ``T`` points (the last tile of a group padded), the
inputs are scattered into a padded ``(K, T, .)`` buffer and every layer is one ``baddbmm`` with
the per-tile weights gathered by the tile's network index (``w[tile_net]``: (K, in, out)).
Distillation uses the special case of equally many points per network, where the stacked
parameters are used directly without gathering. Rendering on CUDA in fp16 evaluates the same tiles
with one Triton kernel instead (``models/fields/kilonerf_fused.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.encoding import encoded_size, positional_encoding

LAYERS = ("w1", "w2", "w3", "w4", "w5")
"""Weight names in evaluation order; biases are "b1".."b5"."""
VIEW_LAYERS = ("w4", "w5")
"""The two view-dependent layers (L2-regularised during fine-tuning, as in the paper)."""


@dataclass(frozen=True)
class KiloNerfFieldConfig:
    """Shape of every tiny network of the grid (paper: 32 wide, PE 10/4)."""

    hidden_width: int = 32
    """Width of the two position layers."""
    feature_width: int = 32
    """Width of the feature vector output with the density (fed to the view layer)."""
    view_width: int = 32
    """Width of the view-dependent layer."""
    pos_freqs: int = 10
    """Positional-encoding frequencies of the local position (63-d with the raw input)."""
    dir_freqs: int = 4
    """Positional-encoding frequencies of the view direction (27-d with the raw input)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "KiloNerfFieldConfig":
        from models.dictconfig import config_from_dict

        return config_from_dict(KiloNerfFieldConfig, d, "KiloNeRF network shape")

    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """(fan_in, fan_out) of each layer."""
        pos, dirs = encoded_size(3, self.pos_freqs), encoded_size(3, self.dir_freqs)
        h, f, v = self.hidden_width, self.feature_width, self.view_width
        return {"w1": (pos, h), "w2": (h, h), "w3": (h, 1 + f), "w4": (f + dirs, v), "w5": (v, 3)}

    def params_per_network(self) -> int:
        return sum(i * o + o for i, o in self.layer_shapes().values())

    def flops_per_sample(self) -> float:
        """FLOPs (2 per multiply-add) of one network evaluation, positional encoding excluded."""
        return float(sum(2 * i * o for i, o in self.layer_shapes().values()))


# ------------------------------------------------------------------------------------ tiling
@dataclass
class TileLayout:
    """Points grouped by network into ``n_tiles`` tiles of ``tile`` points (see ``tile_layout``)."""

    order: torch.Tensor
    """(P,) permutation sorting the points by network."""
    slot: torch.Tensor | None
    """(P,) row of each *sorted* point in the padded (n_tiles * tile) buffer (None: not asked for)."""
    tile_net: torch.Tensor
    """(n_tiles,) int64 network of each tile."""
    n_tiles: int
    tile: int
    first: torch.Tensor
    """(M + 1,) int64: network m's points are ``order[first[m]:first[m + 1]]``."""
    tile_first: torch.Tensor
    """(M,) int64 first tile of each network (its tiles are consecutive): row r of tile k of
    network m holds sorted point ``first[m] + (k - tile_first[m]) * tile + r`` when that is below
    ``first[m + 1]`` (padding otherwise). The fused kernel inverts the layout with this instead
    of a materialised row -> point index."""


def choose_tile(n_points: int, n_networks: int) -> int:
    """Tile length: 128 when networks get many points each, down to 16 when they get few
    (padding wastes at most one tile per network, gathered weights cost 6k values per tile)."""
    per_net = n_points / max(n_networks, 1)
    for t in (128, 64, 32):
        if per_net >= 2 * t:
            return t
    return 16


def tile_upper_bound(n_points: int, n_networks: int, tile: int) -> int:
    """Most tiles ``n_points`` points can need over ``n_networks`` networks: each network pads at
    most one partial tile."""
    return -(-n_points // tile) + min(n_networks, n_points)


def tile_layout(net: torch.Tensor, n_networks: int, tile: int, slots: bool = True,
                max_tiles: int | None = None) -> TileLayout:
    """Group points by network into padded tiles.

    Args:
        net: (P,) network index of each point, in [0, n_networks]; with ``slots=False`` the value
            ``n_networks`` means "no network": such points sort last and get no tile.
        slots: compute ``TileLayout.slot`` (the scatter rows of the batched torch path).
        max_tiles: None: count the tiles (one host sync). Otherwise an upper bound on the number
            of tiles (``tile_upper_bound``) used instead, with no host sync: ``n_tiles`` is then
            that bound, and the tiles past the real ones belong to the last network and hold no
            point (their rows start past that network's points). Needs ``slots=False``.
    Returns:
        a TileLayout.
    """
    dev = net.device
    p = net.numel()
    # int16 keys sort in two radix passes on CUDA (vs eight for int64)
    key = net.to(torch.int16 if n_networks < 32767 else torch.int32)
    key_s, order = torch.sort(key)
    bounds = torch.searchsorted(key_s, torch.arange(n_networks + 1, device=dev, dtype=key.dtype))
    first, counts = bounds[:-1], bounds[1:] - bounds[:-1]  # sorted range of each network
    tiles = torch.div(counts + (tile - 1), tile, rounding_mode="floor")
    tile_end = torch.cumsum(tiles, 0)
    if max_tiles is None:
        n_tiles = int(tile_end[-1].item()) if p else 0
    else:
        if slots:
            raise ValueError("tile_layout: max_tiles needs slots=False")
        n_tiles = max_tiles if p else 0
    tile_first = tile_end - tiles
    slot = None
    if slots:
        net_s = key_s.long()
        slot = tile_first[net_s] * tile + (torch.arange(p, device=dev) - first[net_s])
    tile_net = torch.searchsorted(tile_end, torch.arange(n_tiles, device=dev), right=True)
    return TileLayout(order, slot, tile_net.clamp_max(n_networks - 1), n_tiles, tile, bounds, tile_first)


# ------------------------------------------------------------------------------------- field
class KiloNerfGrid(nn.Module):
    """A grid of tiny MLPs over an axis-aligned box.

    Args:
        aabb: (2, 3) box covered by the grid.
        cell_to_net: (nx, ny, nz) integer network index per cell, -1 for cells without a network;
            the networks are numbered 0..M-1.
    """

    def __init__(self, aabb: torch.Tensor, cell_to_net: torch.Tensor,
                 config: KiloNerfFieldConfig = KiloNerfFieldConfig(), seed: int = 0):
        super().__init__()
        self.config = config
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("cell_to_net", cell_to_net.to(torch.int32).clone())
        self.register_buffer("_res", torch.tensor(cell_to_net.shape, device=self.aabb.device), persistent=False)
        m = int(cell_to_net.max().item()) + 1 if cell_to_net.numel() else 0
        if m <= 0:
            raise ValueError("KiloNeRF grid has no occupied cell (nothing to fit)")
        self.n_networks = m
        g = torch.Generator().manual_seed(seed)
        for i, (name, (fan_in, fan_out)) in enumerate(config.layer_shapes().items(), start=1):
            # nn.Linear's default init (kaiming_uniform, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
            # the same initial values for every network (as the paper's code does)
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
            b = (torch.rand(fan_out, generator=g) * 2 - 1) * bound
            self.register_parameter(name, nn.Parameter(w.expand(m, -1, -1).contiguous()))
            self.register_parameter(f"b{i}", nn.Parameter(b.expand(m, -1).contiguous()))

    # -------------------------------------------------------------------------- geometry
    @property
    def resolution(self) -> tuple[int, int, int]:
        return tuple(int(r) for r in self.cell_to_net.shape)

    @property
    def cell_size(self) -> torch.Tensor:
        """(3,) edge lengths of one cell."""
        return (self.aabb[1] - self.aabb[0]) / self._res

    def network_cells(self) -> torch.Tensor:
        """(M, 3) integer cell coordinates of each network."""
        ijk = torch.nonzero(self.cell_to_net >= 0)
        nets = self.cell_to_net[ijk[:, 0], ijk[:, 1], ijk[:, 2]].long()
        out = torch.empty_like(ijk)
        out[nets] = ijk
        return out

    def cell_of(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (N, 3) -> integer cell coords (N, 3) (clamped) and an inside-box mask (N,)."""
        rel = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((rel >= 0) & (rel <= 1)).all(-1)
        idx = torch.minimum((rel * self._res).floor().long().clamp_min(0), self._res - 1)
        return idx, inside

    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (N, 3) world -> network index (N,) (-1: outside or empty cell), local coords (N, 3)."""
        idx, inside = self.cell_of(points)
        net = self.cell_to_net[idx[:, 0], idx[:, 1], idx[:, 2]].long()
        net = torch.where(inside, net, torch.full_like(net, -1))
        cs = self.cell_size
        local = (points - self.aabb[0] - idx.to(points.dtype) * cs) / cs * 2.0 - 1.0
        return net, local

    # ------------------------------------------------------------------------ evaluation
    def stacked_weights(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in (*LAYERS, "b1", "b2", "b3", "b4", "b5")}

    def forward(self, points: torch.Tensor, dirs: torch.Tensor,
                packed: "PackedWeights | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """points (N, 3) world, dirs (N, 3) unit view directions -> sigma (N,), rgb (N, 3).

        Points outside the box or in cells without a network get sigma = 0, rgb = 0.
        ``packed``: pre-packed (e.g. fp16) weights for inference; the evaluation dtype is theirs.
        """
        net, local = self.locate(points)
        return self.evaluate(local, dirs, net, packed)

    def evaluate(self, local: torch.Tensor, dirs: torch.Tensor, net: torch.Tensor,
                 packed: "PackedWeights | None" = None, tile: int | None = None,
                 all_valid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate network ``net[i]`` at local coords ``local[i]`` (the batched path).

        Args:
            local: (N, 3) cell-local coordinates; dirs: (N, 3) unit directions;
            net: (N,) int network indices, -1 for "no network" (output 0);
            all_valid: the caller guarantees no -1 (skips the masking).
        Returns:
            sigma (N,) and rgb (N, 3), float32 (autograd flows to the parameters unless packed).
        """
        n = local.shape[0]
        if n == 0:
            return local.new_zeros(0), local.new_zeros(0, 3)
        if not all_valid:  # "no network" points are evaluated by network 0 and masked: no host sync
            has_net = net >= 0
            net = net.clamp_min(0)
        m = self.n_networks
        layout = tile_layout(net, m, tile or choose_tile(n, m))
        rows = layout.n_tiles * layout.tile
        inputs = torch.cat([local, dirs.to(local.dtype)], 1)[layout.order]  # (N, 6) sorted by network
        xd = local.new_zeros(rows, 6).index_put_((layout.slot,), inputs).view(layout.n_tiles, layout.tile, 6)
        weights = packed.gather(layout.tile_net) if packed is not None else {
            k: v[layout.tile_net] for k, v in self.stacked_weights().items()}
        dtype = packed.dtype if packed is not None else None
        s_t, c_t = self.run_layers(xd[..., :3], xd[..., 3:], weights, dtype)
        out_t = torch.cat([s_t[..., None], c_t], -1).reshape(rows, 4)
        out = out_t.new_empty(n, 4).index_put_((layout.order,), out_t[layout.slot]).float()
        if not all_valid:
            out = out * has_net[:, None].to(out.dtype)
        return out[:, 0], out[:, 1:]

    def forward_grouped(self, local: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every network on its own equally long batch: local, dirs (M, B, 3) -> sigma (M, B), rgb (M, B, 3)."""
        return self.run_layers(local, dirs, self.stacked_weights(), None)

    def run_layers(self, local: torch.Tensor, dirs: torch.Tensor, w: dict[str, torch.Tensor],
                   dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network stack on groups: local, dirs (G, T, 3); w[name] (G, in, out) / biases (G, out).

        The positional encodings are computed in float32 (fp16 cannot resolve sin(2^9 x)) and then
        cast to ``dtype`` (None: the weights' dtype, or autocast's choice).
        """
        c = self.config
        xe = positional_encoding(local.float(), c.pos_freqs)
        de = positional_encoding(dirs.float(), c.dir_freqs)
        if dtype is not None:
            xe, de = xe.to(dtype), de.to(dtype)

        def lin(h, i):
            return torch.baddbmm(w[f"b{i}"].unsqueeze(1), h, w[f"w{i}"])

        h = torch.relu(lin(xe, 1))
        h = torch.relu(lin(h, 2))
        o = lin(h, 3)
        sigma = torch.relu(o[..., 0])
        h = torch.relu(lin(torch.cat([o[..., 1:], de.to(o.dtype)], -1), 4))
        rgb = torch.sigmoid(lin(h, 5))
        return sigma, rgb

    # ---------------------------------------------------------------------------- helpers
    def params_per_network(self) -> int:
        return sum(p[0].numel() for p in self.parameters())

    def flops_per_sample(self) -> float:
        return self.config.flops_per_sample()

    def view_weights_l2(self) -> torch.Tensor:
        """Sum of squares of the weights of the two view-dependent layers (all networks)."""
        return sum((getattr(self, n) ** 2).sum() for n in VIEW_LAYERS)

    def pack(self, dtype: torch.dtype) -> "PackedWeights":
        return PackedWeights(self, dtype)


class PackedWeights:
    """All parameters of every network in one (M, row) tensor of ``dtype`` (inference).

    One gather per tile batch instead of ten; each tensor's offset within a row is a multiple of
    8 elements and the row length a multiple of 8, so the (K, in, out) views stay 16-byte aligned
    for tensor-core GEMMs.
    """

    def __init__(self, field: KiloNerfGrid, dtype: torch.dtype):
        self.dtype = dtype
        tensors = field.stacked_weights()
        m = field.n_networks
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, int] = {}
        off = 0
        for k, v in tensors.items():
            self.shapes[k] = tuple(v.shape[1:])
            self.offsets[k] = off
            off += -(-v[0].numel() // 8) * 8
        self.row = off
        buf = torch.zeros(m, self.row, dtype=dtype, device=field.aabb.device)
        with torch.no_grad():
            for k, v in tensors.items():
                buf[:, self.offsets[k]:self.offsets[k] + v[0].numel()] = v.detach().reshape(m, -1).to(dtype)
        self.buffer = buf

    def gather(self, tile_net: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.buffer.index_select(0, tile_net)  # (K, row)
        k = g.shape[0]
        out = {}
        for name, shape in self.shapes.items():
            o = self.offsets[name]
            n = math.prod(shape)
            if len(shape) == 2:
                out[name] = g.as_strided((k, *shape), (self.row, shape[1], 1), o)
            else:
                out[name] = g[:, o:o + n]
        return out
