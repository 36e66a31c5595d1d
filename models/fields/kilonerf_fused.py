"""KiloNeRF's tiny-MLP evaluation in one Triton kernel (inference on CUDA, fp16 tensor cores).

The batched torch path (``KiloNerfGrid.evaluate`` with ``PackedWeights``) costs ~40 kernel
launches per call: the inputs are concatenated and scattered into padded tiles, every tile's
weights gathered, the encodings built with stack/cat, five ``baddbmm`` with activations between
them, the outputs gathered back. An 800x800 frame evaluates its samples in several passes, so
those launches, not the 12 kFLOP per sample, dominated the frame (H100 profile: ~790 launches).

``FusedKiloNerf`` does the same evaluation in one launch (plus the sort that groups the points by
network, ``tile_layout(..., slots=False)``), with no host sync: the grid is the bound
``tile_upper_bound`` = ceil(N / T) + M on the tile count, and the spare programs return at once.
Each program takes one tile of ``T`` points of one network and keeps them on chip from the
inputs to the outputs:

* the tile's network ``m`` and its points: row r is sorted point ``first[m] + (k - tile_first[m]) T + r``
  (``TileLayout``), padding rows past ``first[m + 1]`` are masked, so no padded buffer and no
  row -> point index are materialised;
* the point's local coordinates and direction are gathered, both encodings computed in float32
  in registers (``cos a = sin(a + pi/2)``: one libdevice sin per column; the rounding of the
  shifted argument, <= 3e-5 at |a| = 512, is 16x below the fp16 rounding of the result);
* h1 = relu(gamma(x) W1 + b1) (K = 63 padded to 64), h2, the 32-wide feature and
  h4 = relu(feature W4f + gamma(d) W4d + b4) (W4 split at its 32 feature rows, the 27 direction
  rows padded to 32) are tensor-core products, fp16 in, fp32 accumulate;
* the two narrow outputs, the density (W3's column 0) and the colour (W5, 32 -> 3), are row
  reductions in float32: Triton 3.6 miscompiled a 16-column tensor-core product on the H100 (see
  ``models/backends/r2l.py``), and 4 x 32 MACs per point do not need tensor cores;
* sigma = relu(.) and rgb = sigmoid(.) are written straight to the points' rows of an (N, 4)
  output, one 16-byte store per point; points of no network keep 0.

Weights are repacked once (``FusedKiloNerf(field)``; 12.3 KB of fp16 matrices plus 0.9 KB of
fp32 vectors per network) and streamed from L2 by every program of that network.

Tile length: 16 rows, one warp (one m16 tensor-core tile). A sweep on an H200 (2026-11-22,
random weights, 1237 networks, 4M points; ms per call) found the time set by the rows per warp,
not by the tile count: 16 rows / 1 warp 1.72, 16 / 2 2.0, 32 / 4 2.16, 64 / 4 2.10, 128 / 4 3.76,
128 / 8 2.95 (presumably register pressure: a thread holds more of the (T, 64) float32
encoding as rows per warp grow; inferred, not profiled). Small tiles also
pad least (at most 15 rows per network), so ``choose_tile``'s trade-off between padding and
per-tile weight gathers does not apply here. The same sweep at 200k points: 0.24-0.29 ms for
every tile of <= 64 rows. Other tile lengths remain available (``tile=``, warps = rows / 16).
"""

from __future__ import annotations

import functools

import torch

from models.encoding import encoded_size
from models.fields.kilonerf_grid import KiloNerfFieldConfig, KiloNerfGrid, tile_layout, tile_upper_bound
from models.triton_support import bind_triton, can_run_kernels

TILE = 16
"""Default tile length of the fused kernel (see the module docstring)."""


def triton_available() -> bool:
    """Whether Triton can be imported (it is optional: GPU machines have it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _pow2(n: int) -> int:
    """Smallest power of two >= max(n, 16) (tl.arange and tl.dot need powers of two, >= 16)."""
    return max(16, 1 << (n - 1).bit_length())


class FusedKiloNerf:
    """Every tiny network of a ``KiloNerfGrid`` evaluated by one Triton kernel (inference, fp16).

    Holds a repacked, kernel-friendly copy of the weights: rebuild it after the field's weights
    change. Call it like ``KiloNerfGrid.evaluate``.
    """

    def __init__(self, field: KiloNerfGrid):
        if not can_run_kernels():
            raise RuntimeError("the fused KiloNeRF kernel needs CUDA (or TRITON_INTERPRET=1 for testing on CPU)")
        cfg = field.config
        if not self.supports(cfg):
            raise ValueError(f"fused KiloNeRF kernel needs power-of-two widths >= 16, got {cfg}")
        self.kernel = _fused_kernel()
        self.config = cfg
        self.n_networks = m = field.n_networks
        pos, dirs = encoded_size(3, cfg.pos_freqs), encoded_size(3, cfg.dir_freqs)
        self.kp, self.kd = _pow2(pos), _pow2(dirs)  # padded encoding widths (63 -> 64, 27 -> 32)
        f = cfg.feature_width
        with torch.no_grad():
            def half(w, rows):  # (M, r, c) -> (M, rows, c) fp16, zero rows appended
                out = w.new_zeros(m, rows, w.shape[2], dtype=torch.float16)
                out[:, :w.shape[1]] = w
                return out.contiguous()

            w3, b3, w4 = field.w3.detach(), field.b3.detach(), field.w4.detach()
            self.w1 = half(field.w1.detach(), self.kp)  # (M, 64, H)
            self.w2 = half(field.w2.detach(), cfg.hidden_width)  # (M, H, H)
            self.w3 = half(w3[:, :, 1:], cfg.hidden_width)  # (M, H, F) feature columns
            self.w4f = half(w4[:, :f], f)  # (M, F, V) rows of the feature
            self.w4d = half(w4[:, f:], self.kd)  # (M, 32, V) rows of gamma(d), padded
            self.ws = w3[:, :, 0].float().contiguous()  # (M, H) density column of W3
            self.w5 = field.w5.detach().transpose(1, 2).float().contiguous()  # (M, 3, V)
            self.b1 = field.b1.detach().float().contiguous()
            self.b2 = field.b2.detach().float().contiguous()
            self.b3 = b3[:, 1:].float().contiguous()  # (M, F)
            self.bs = b3[:, 0].float().contiguous()  # (M,)
            self.b4 = field.b4.detach().float().contiguous()
            self.b5 = field.b5.detach().float().contiguous()  # (M, 3)

    @staticmethod
    def supports(cfg: KiloNerfFieldConfig) -> bool:
        widths = (cfg.hidden_width, cfg.feature_width, cfg.view_width)
        return all(w >= 16 and w & (w - 1) == 0 for w in widths)

    @staticmethod
    def num_warps(tile: int) -> int:
        """One warp per 16 rows (the fastest ratio measured), at most 8."""
        return min(8, max(1, tile // 16))

    def __call__(self, local: torch.Tensor, dirs: torch.Tensor, net: torch.Tensor, tile: int | None = None,
                 all_valid: bool = False, dirs_per: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate network ``net[i]`` at ``local[i]`` viewed along ``dirs[i]``.

        Args:
            local: (N, 3) cell-local coordinates; dirs: (N, 3) unit directions;
            net: (N,) int network indices, -1 for "no network" (output 0);
            tile: tile length, a power of two >= 16 (None: ``TILE``);
            all_valid: the caller guarantees no -1;
            dirs_per: point i is viewed along ``dirs[i // dirs_per]`` (``dirs``: (N / dirs_per, 3),
                rows may be strided, e.g. a column view of the marcher's ray state).
        Returns:
            sigma (N,) and rgb (N, 3), float32 (views of one (N, 4) tensor).
        """
        out = self.rows(local, dirs, net, tile, all_valid, dirs_per)
        return out[:, 0], out[:, 1:]

    def rows(self, local: torch.Tensor, dirs: torch.Tensor, net: torch.Tensor, tile: int | None = None,
             all_valid: bool = False, dirs_per: int = 1, marked: bool = False) -> torch.Tensor:
        """As ``__call__``, but returns the kernel's (N, 4) output rows [sigma, r, g, b].

        ``marked``: "no network" is already marked by ``n_networks`` instead of -1 in ``net``
        (the marcher writes it so; saves the remapping)."""
        n, m = local.shape[0], self.n_networks
        out = (torch.empty if all_valid else torch.zeros)(n, 4, device=local.device, dtype=torch.float32)
        if n == 0:
            return out
        if not (all_valid or marked):  # "no network" sorts after every network and gets no tile
            net = torch.where(net >= 0, net, torch.full_like(net, m))
        t = tile or TILE
        # no host sync: launch the bound on the tile count; tiles past the real ones hold no point
        # (the kernel masks rows at or past their network's end) and store nothing
        lay = tile_layout(net, m, t, slots=False, max_tiles=tile_upper_bound(n, m, t))
        if lay.n_tiles:
            c = self.config
            if dirs.dtype != torch.float32 or dirs.stride(1) != 1:
                dirs = dirs.float().contiguous()
            self.kernel[(lay.n_tiles,)](
                local.float().contiguous(), dirs, int(dirs_per), dirs.stride(0), lay.order, lay.first, lay.tile_first,
                lay.tile_net, self.w1, self.b1, self.w2, self.b2, self.w3, self.b3, self.ws, self.bs,
                self.w4f, self.w4d, self.b4, self.w5, self.b5, out, m,
                T=t, KP=self.kp, KD=self.kd, H=c.hidden_width, F=c.feature_width, V=c.view_width,
                NP=c.pos_freqs, ND=c.dir_freqs, num_warps=self.num_warps(t), num_stages=1,
            )
        return out

    def warm_up(self, device: torch.device | str, tile: int | None = None) -> None:
        """Compile the kernel for ``tile`` (None: ``TILE``) now, so the first frame does not stall."""
        g = torch.Generator(device=device).manual_seed(0)
        n = 256
        local = torch.rand(n, 3, device=device, generator=g) * 2 - 1
        dirs = torch.nn.functional.normalize(torch.randn(n, 3, device=device, generator=g), dim=-1)
        net = torch.arange(n, device=device) % self.n_networks
        self(local, dirs, net, tile=tile, all_valid=True)


@functools.cache
def _fused_kernel():
    """Compile-on-demand definition of the fused kernel (Triton is imported only here)."""
    triton = bind_triton(globals())

    @triton.jit
    def _encode(x0, x1, x2, K: tl.constexpr, NF: tl.constexpr):
        """gamma of (T,) coordinates x0, x1, x2 -> (T, K) float32, columns [x, sin(2^0 x),
        cos(2^0 x), ..., sin(2^(NF-1) x), cos(2^(NF-1) x)] (3 each), zero past 3 (1 + 2 NF)."""
        col = tl.arange(0, K)
        axis = col % 3  # also the axis of the encoded columns: 3 + 6 f + 3 s + axis
        j = tl.maximum(col - 3, 0)
        scale = (1 << (j // 6)).to(tl.float32)  # 2^f, exact
        phase = tl.where((j % 6) >= 3, 1.5707963267948966, 0.0)  # cos a = sin(a + pi/2)
        x = tl.where(axis[None, :] == 0, x0[:, None], tl.where(axis[None, :] == 1, x1[:, None], x2[:, None]))
        s = libdevice.sin(x * scale[None, :] + phase[None, :])
        enc = tl.where(col[None, :] < 3, x, s)
        return tl.where(col[None, :] < 3 * (1 + 2 * NF), enc, 0.0)

    globals()["_encode"] = _encode

    @triton.jit(do_not_specialize=["dirs_per", "dirs_stride"])
    def _kilonerf_fused(local_ptr, dirs_ptr, dirs_per, dirs_stride, order_ptr, first_ptr, tile_first_ptr, tile_net_ptr,
                        w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, ws_ptr, bs_ptr,
                        w4f_ptr, w4d_ptr, b4_ptr, w5_ptr, b5_ptr, out_ptr, M,
                        T: tl.constexpr, KP: tl.constexpr, KD: tl.constexpr, H: tl.constexpr, F: tl.constexpr,
                        V: tl.constexpr, NP: tl.constexpr, ND: tl.constexpr):
        tid = tl.program_id(0)
        # ---- this tile's network and points (int32 indices; the network clamped for safety)
        net = tl.minimum(tl.maximum(tl.load(tile_net_ptr + tid).to(tl.int32), 0), M - 1)
        end = tl.load(first_ptr + net + 1).to(tl.int32)
        start = tl.load(first_ptr + net).to(tl.int32) + (tid - tl.load(tile_first_ptr + net).to(tl.int32)) * T
        if start >= end:  # a spare tile of the launch bound (``tile_upper_bound``): no point
            return
        pos = start + tl.arange(0, T)
        valid = pos < end
        p = tl.load(order_ptr + pos, mask=valid, other=0).to(tl.int32)
        x0 = tl.load(local_ptr + p * 3, mask=valid, other=0.0)
        x1 = tl.load(local_ptr + p * 3 + 1, mask=valid, other=0.0)
        x2 = tl.load(local_ptr + p * 3 + 2, mask=valid, other=0.0)
        dp = (p // dirs_per).to(tl.int64) * dirs_stride
        d0 = tl.load(dirs_ptr + dp, mask=valid, other=0.0)
        d1 = tl.load(dirs_ptr + dp + 1, mask=valid, other=0.0)
        d2 = tl.load(dirs_ptr + dp + 2, mask=valid, other=0.0)
        # ---- position layers
        kp = tl.arange(0, KP)
        kd = tl.arange(0, KD)
        h = tl.arange(0, H)
        f = tl.arange(0, F)
        v = tl.arange(0, V)
        xe = _encode(x0, x1, x2, KP, NP).to(tl.float16)  # (T, KP)
        w1 = tl.load(w1_ptr + net * (KP * H) + kp[:, None] * H + h[None, :])
        h1 = tl.dot(xe, w1) + tl.load(b1_ptr + net * H + h)[None, :]
        h1 = tl.maximum(h1, 0.0).to(tl.float16)
        w2 = tl.load(w2_ptr + net * (H * H) + h[:, None] * H + h[None, :])
        h2 = tl.maximum(tl.dot(h1, w2) + tl.load(b2_ptr + net * H + h)[None, :], 0.0).to(tl.float16)
        # ---- density (a row reduction) and the feature
        sigma = tl.sum(h2.to(tl.float32) * tl.load(ws_ptr + net * H + h)[None, :], axis=1) + tl.load(bs_ptr + net)
        w3 = tl.load(w3_ptr + net * (H * F) + h[:, None] * F + f[None, :])
        feat = (tl.dot(h2, w3) + tl.load(b3_ptr + net * F + f)[None, :]).to(tl.float16)
        # ---- view-dependent layers: W4 [feature, gamma(d)] as two products into one accumulator
        de = _encode(d0, d1, d2, KD, ND).to(tl.float16)  # (T, KD)
        w4f = tl.load(w4f_ptr + net * (F * V) + f[:, None] * V + v[None, :])
        w4d = tl.load(w4d_ptr + net * (KD * V) + kd[:, None] * V + v[None, :])
        h4 = tl.dot(de, w4d, acc=tl.dot(feat, w4f)) + tl.load(b4_ptr + net * V + v)[None, :]
        h4 = tl.maximum(h4, 0.0).to(tl.float16).to(tl.float32)  # fp16 like the torch path's activations
        # ---- outputs: one 16-byte row [sigma, r, g, b] per point
        c4 = tl.arange(0, 4)
        row = tl.where(c4[None, :] == 0, tl.maximum(sigma, 0.0)[:, None], 0.0)
        for j in tl.static_range(3):
            c = tl.sum(h4 * tl.load(w5_ptr + net * (3 * V) + j * V + v)[None, :], axis=1)
            row = tl.where(c4[None, :] == 1 + j, tl.sigmoid(c + tl.load(b5_ptr + net * 3 + j))[:, None], row)
        tl.store(out_ptr + p[:, None] * 4 + c4[None, :], row, mask=valid[:, None])

    return _kilonerf_fused
