"""Multi-resolution tri-plane features (the spatial planes of K-planes, Fridovich-Keil et al. 2023).

Level l holds three feature planes of R_l x R_l texels with C channels each, over the axis
pairs (x, y), (x, z) and (y, z) of the box [-1, 1]^3. A point's feature at a level is the
product of its three bilinear lookups (texel centres as ``grid_sample(align_corners=False)``,
zero outside the box); the levels are concatenated, so a point gets C x L features.

All levels live in one flat parameter, channel-last ((3, R, R, C) per level, concatenated), which
both execution paths read:

* ``torch``: ``F.grid_sample`` on views of the table (CPU and CUDA; the reference);
* ``triton``: one gather kernel per batch of points, one 16-byte load per texel for C = 8 in
  fp32 pairs, and a backward kernel that adds the gradients into the table with atomics
  (CUDA, or the Triton interpreter in tests). Both compute the same function; a test checks
  values and gradients against the torch path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from models.triton_support import bind_triton, can_run_kernels, cdiv

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Coordinates (u, v) of each plane: u indexes the plane's columns, v its rows."""


class FeaturePlanes(nn.Module):
    """(N, 3) points in [-1, 1]^3 -> (N, channels * levels) features."""

    def __init__(self, channels: int, resolutions: tuple[int, ...]):
        super().__init__()
        self.channels = int(channels)
        self.resolutions = tuple(int(r) for r in resolutions)
        sizes = [3 * r * r * self.channels for r in self.resolutions]
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)
        self.offsets = tuple(offsets)
        # K-planes initialises its spatial planes uniformly in [0.1, 0.5]
        self.table = nn.Parameter(torch.empty(sum(sizes)).uniform_(0.1, 0.5))
        self.accel = "torch"
        """"torch" (grid_sample) or "triton" (the gather kernels; CUDA or the interpreter)."""

    @property
    def levels(self) -> int:
        return len(self.resolutions)

    def level(self, i: int, table: torch.Tensor | None = None) -> torch.Tensor:
        """Level i of the table as (3, R, R, C) (a view)."""
        t = self.table if table is None else table
        r, c = self.resolutions[i], self.channels
        return t[self.offsets[i] : self.offsets[i] + 3 * r * r * c].view(3, r, r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.accel == "triton" and x.shape[0] > 0:
            return planes_gather(x, self.table, self)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The torch path: three ``grid_sample`` lookups per level, multiplied."""
        x = x.float()
        coords = torch.stack([x[:, list(a)] for a in PLANE_AXES])[:, :, None, :]  # (3, N, 1, 2)
        out = []
        for i in range(self.levels):
            planes = self.level(i).float().permute(0, 3, 1, 2)  # (3, C, R, R)
            f = F.grid_sample(planes, coords, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]
            out.append(f[0] * f[1] * f[2])  # (C, N)
        return torch.cat(out, 0).t()


def planes_kernel_error(planes: FeaturePlanes, device: torch.device, n: int = 4096, seed: int = 0) -> float:
    """Largest relative difference between the Triton and the torch path (features and table
    gradients) on random points in and around the box; the table is left unchanged."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.rand(n, 3, generator=g) * 2.2 - 1.1).to(device)
    w = torch.randn(n, planes.channels * planes.levels, generator=g).to(device)
    probe = FeaturePlanes(planes.channels, planes.resolutions).to(device)
    probe.table = torch.nn.Parameter(planes.table.detach().clone())
    ref = probe.reference(x)
    (ref * w).sum().backward()
    g_ref = probe.table.grad.clone()
    probe.table.grad = None
    probe.accel = "triton"
    got = probe(x)
    (got * w).sum().backward()
    err_f = float((got.detach() - ref.detach()).abs().max() / ref.detach().abs().max().clamp_min(1e-12))
    err_g = float((probe.table.grad - g_ref).abs().max() / g_ref.abs().max().clamp_min(1e-12))
    return max(err_f, err_g)


# ========================================================================== Triton kernels
def kernel_layout(planes: FeaturePlanes, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(resolutions (L,) int32, offsets (L,) int64) on ``device``, cached per device."""
    cache = planes.__dict__.setdefault("_layout", {})
    key = str(device)
    if key not in cache:
        cache[key] = (torch.tensor(planes.resolutions, dtype=torch.int32, device=device),
                      torch.tensor(planes.offsets, dtype=torch.int64, device=device))
    return cache[key]


class _PlanesGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, planes):
        res, off = kernel_layout(planes, x.device)
        n = x.shape[0]
        c, levels = planes.channels, planes.levels
        out = torch.empty(n, c * levels, device=x.device, dtype=torch.float32)
        block = 64
        kern = _gather_kernels()[0]
        kern[(cdiv(n, block),)](x, table, res, off, out, n, C=c, L=levels, BLOCK=block)
        ctx.save_for_backward(x, table)
        ctx.planes = planes
        return out

    @staticmethod
    def backward(ctx, grad):
        x, table = ctx.saved_tensors
        planes = ctx.planes
        res, off = kernel_layout(planes, x.device)
        n = x.shape[0]
        gt = torch.zeros_like(table, dtype=torch.float32)
        block = 64
        kern = _gather_kernels()[1]
        kern[(cdiv(n, block),)](x, table, res, off, grad.float().contiguous(), gt, n, C=planes.channels,
                                L=planes.levels, BLOCK=block)
        return None, gt.to(table.dtype), None


def planes_gather(x: torch.Tensor, table: torch.Tensor, planes: FeaturePlanes) -> torch.Tensor:
    """The Triton path of ``FeaturePlanes.forward`` (differentiable with respect to the table)."""
    if not can_run_kernels():
        raise RuntimeError("the feature-plane kernels need CUDA (or TRITON_INTERPRET=1 for testing on CPU)")
    if planes.channels & (planes.channels - 1):
        raise ValueError("the feature-plane kernels need a power-of-two channel count")
    return _PlanesGather.apply(x.float().contiguous(), table, planes)


@functools.cache
def _gather_kernels():
    """Compile-on-demand definitions (Triton is imported only here)."""
    triton = bind_triton(globals())

    @triton.jit
    def _texel_coords(u, r):
        """Bilinear corners of normalised coordinates u (BLOCK,) on R texels (align_corners=False)."""
        f = ((u + 1.0) * r - 1.0) * 0.5
        i0f = tl.floor(f)
        w1 = f - i0f
        i0 = i0f.to(tl.int32)
        return i0, i0 + 1, 1.0 - w1, w1

    globals()["_texel_coords"] = _texel_coords

    @triton.jit
    def _corner_load(table, base, r, ia, ib, w, valid, ch, C: tl.constexpr):
        ptr = table + base + ((ib * r + ia) * C).to(tl.int64)[:, None] + ch[None, :]
        return tl.load(ptr, mask=valid[:, None], other=0.0).to(tl.float32) * w[:, None]

    globals()["_corner_load"] = _corner_load

    @triton.jit
    def _corner_add(gtable, base, r, ia, ib, w, valid, ch, g, C: tl.constexpr):
        ptr = gtable + base + ((ib * r + ia) * C).to(tl.int64)[:, None] + ch[None, :]
        tl.atomic_add(ptr, g * w[:, None], mask=valid[:, None], sem="relaxed")  # no fences: a plain reduction

    globals()["_corner_add"] = _corner_add

    @triton.jit
    def _plane_lookup(table, base, r, a, b, rmask, ch, C: tl.constexpr):
        """Bilinear lookup (BLOCK, C) in one plane (R, R, C) at column coordinate a, row b."""
        ia0, ia1, wa0, wa1 = _texel_coords(a, r)
        ib0, ib1, wb0, wb1 = _texel_coords(b, r)
        va0 = (ia0 >= 0) & (ia0 < r)
        va1 = (ia1 >= 0) & (ia1 < r)
        vb0 = ((ib0 >= 0) & (ib0 < r)) & rmask
        vb1 = ((ib1 >= 0) & (ib1 < r)) & rmask
        acc = _corner_load(table, base, r, ia0, ib0, wa0 * wb0, va0 & vb0, ch, C)
        acc += _corner_load(table, base, r, ia1, ib0, wa1 * wb0, va1 & vb0, ch, C)
        acc += _corner_load(table, base, r, ia0, ib1, wa0 * wb1, va0 & vb1, ch, C)
        acc += _corner_load(table, base, r, ia1, ib1, wa1 * wb1, va1 & vb1, ch, C)
        return acc

    globals()["_plane_lookup"] = _plane_lookup

    @triton.jit
    def _plane_scatter(gtable, base, r, a, b, rmask, ch, g, C: tl.constexpr):
        """Add g (BLOCK, C) into the four texels of each point's lookup, bilinearly weighted."""
        ia0, ia1, wa0, wa1 = _texel_coords(a, r)
        ib0, ib1, wb0, wb1 = _texel_coords(b, r)
        va0 = (ia0 >= 0) & (ia0 < r)
        va1 = (ia1 >= 0) & (ia1 < r)
        vb0 = ((ib0 >= 0) & (ib0 < r)) & rmask
        vb1 = ((ib1 >= 0) & (ib1 < r)) & rmask
        _corner_add(gtable, base, r, ia0, ib0, wa0 * wb0, va0 & vb0, ch, g, C)
        _corner_add(gtable, base, r, ia1, ib0, wa1 * wb0, va1 & vb0, ch, g, C)
        _corner_add(gtable, base, r, ia0, ib1, wa0 * wb1, va0 & vb1, ch, g, C)
        _corner_add(gtable, base, r, ia1, ib1, wa1 * wb1, va1 & vb1, ch, g, C)

    globals()["_plane_scatter"] = _plane_scatter

    @triton.jit
    def _planes_fwd(x_ptr, table, res_ptr, off_ptr, out_ptr, N, C: tl.constexpr, L: tl.constexpr,
                    BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK + tl.arange(0, BLOCK)
        rmask = rows < N
        px = tl.load(x_ptr + rows * 3 + 0, mask=rmask, other=0.0)
        py = tl.load(x_ptr + rows * 3 + 1, mask=rmask, other=0.0)
        pz = tl.load(x_ptr + rows * 3 + 2, mask=rmask, other=0.0)
        ch = tl.arange(0, C)
        for lvl in tl.static_range(L):
            r = tl.load(res_ptr + lvl)
            base = tl.load(off_ptr + lvl)
            plane = (r * r * C).to(tl.int64)
            f = _plane_lookup(table, base, r, px, py, rmask, ch, C)
            f *= _plane_lookup(table, base + plane, r, px, pz, rmask, ch, C)
            f *= _plane_lookup(table, base + 2 * plane, r, py, pz, rmask, ch, C)
            tl.store(out_ptr + rows[:, None] * (C * L) + lvl * C + ch[None, :], f, mask=rmask[:, None])

    @triton.jit
    def _planes_bwd(x_ptr, table, res_ptr, off_ptr, g_ptr, gtable, N, C: tl.constexpr, L: tl.constexpr,
                    BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK + tl.arange(0, BLOCK)
        rmask = rows < N
        px = tl.load(x_ptr + rows * 3 + 0, mask=rmask, other=0.0)
        py = tl.load(x_ptr + rows * 3 + 1, mask=rmask, other=0.0)
        pz = tl.load(x_ptr + rows * 3 + 2, mask=rmask, other=0.0)
        ch = tl.arange(0, C)
        for lvl in tl.static_range(L):
            r = tl.load(res_ptr + lvl)
            base = tl.load(off_ptr + lvl)
            plane = (r * r * C).to(tl.int64)
            g = tl.load(g_ptr + rows[:, None] * (C * L) + lvl * C + ch[None, :], mask=rmask[:, None], other=0.0)
            fxy = _plane_lookup(table, base, r, px, py, rmask, ch, C)
            fxz = _plane_lookup(table, base + plane, r, px, pz, rmask, ch, C)
            fyz = _plane_lookup(table, base + 2 * plane, r, py, pz, rmask, ch, C)
            _plane_scatter(gtable, base, r, px, py, rmask, ch, g * fxz * fyz, C)
            _plane_scatter(gtable, base + plane, r, px, pz, rmask, ch, g * fxy * fyz, C)
            _plane_scatter(gtable, base + 2 * plane, r, py, pz, rmask, ch, g * fxy * fxz, C)

    return _planes_fwd, _planes_bwd
