"""KiloNeRF's marching loop in Triton: a pass is three kernels and a sort instead of ~240 torch ops.

On an H100 the torch marching loop (``render_passes`` with ``march="torch"``) is bound by the CPU
dispatching its small ops, not by the GPU: ``benchmarks/kilonerf_op_count.py`` counts ~238 torch ops
per pass with the fused network kernel (27 per distance-field jump, ~33 for the window, the
sample gathers, ``composite_packed``, the ray compaction), and a frame with 6.7 ms of GPU work
took ~20 ms. ``TritonMarcher`` does the same pass with:

1. ``march``, one kernel, one lane per ray: the pass's distance-field jumps, then the window of
   ``W`` lattice positions tested against the ESS table, the first ``S`` occupied ones written to
   the ray's ``S`` sample slots (lattice t, network, cell-local coordinates; unused slots get
   the "no network" mark M), the new lattice index written back into the ray state;
2. the fused network kernel (``FusedKiloNerf``) over all ``A x S`` slots, reading each slot's view
   direction straight from the ray state (``dirs_per=S``): the unused slots sort after every
   network and get no tile, so there is no compaction and no host sync;
3. ``composite``, one kernel, one lane per ray: front-to-back compositing of the ray's slots,
   continuing its transmittance from the earlier passes, the colour, depth, opacity and sample
   count added into the frame's accumulators, and the retire flag (left the box, or transmittance
   below the ERT threshold);
4. the survivors are compacted (``nonzero``: the pass's one host sync).

Each lane computes exactly what the torch stages compute (same lattice, same voxel and cell
arithmetic, same compositing formula), in float32; the two paths can differ only where float
rounding in a different order flips a lattice position across a voxel face (tests compare
images and sample counts). Needs CUDA, or ``TRITON_INTERPRET=1`` (CPU emulation, tests).
"""

from __future__ import annotations

import functools
import math

import torch

from models.triton_support import bind_triton, can_run_kernels, cdiv

BLOCK = 128
"""Rays per program of both kernels."""


class TritonMarcher:
    """The march and composite kernels bound to one ESS grid (its tables and constants) and the
    network count of the field it renders."""

    def __init__(self, ess, n_networks: int):
        if not can_run_kernels():
            raise RuntimeError("the Triton marcher needs CUDA (or TRITON_INTERPRET=1 for testing on CPU)")
        if ess.net_table is None:
            raise ValueError("the ESS grid has no network table (EssGrid.set_networks)")
        self.ess = ess
        self.march_kernel, self.composite_kernel = _kernels()
        # the grid's constants as host scalars, read once (float32 values: exact as Python floats)
        vec = torch.stack([ess.offset, ess.scale, ess.upper, ess.aabb[0], ess.cell_size, ess.factor]).float().cpu()
        self.offset, self.scale, self.upper, self.lo, self.cell, self.factor = (tuple(map(float, v)) for v in vec)
        self.strides = tuple(int(s) for s in ess.strides.cpu())
        self.n_networks = int(n_networks)
        """The fused network kernel's "no network" mark (its network count)."""

    def march(self, st: torch.Tensor, n_jumps: int, w: int, s: int):
        """One pass's jumps and window for the rays of ``st`` (A, 15) (its lattice index updated in
        place). Returns t (A*S,) float32, net (A*S,) int32 (``n_networks``: unused slot, or a voxel
        without a network), local (A*S, 3) and count (A,) int32 (used slots per ray)."""
        if st.dtype != torch.float32 or st.stride(1) != 1:
            raise ValueError("the ray state must be float32 rows with contiguous columns")
        a, dev = st.shape[0], st.device
        t = torch.empty(a * s, device=dev, dtype=torch.float32)
        net = torch.empty(a * s, device=dev, dtype=torch.int32)
        local = torch.empty(a * s, 3, device=dev, dtype=torch.float32)
        count = torch.empty(a, device=dev, dtype=torch.int32)
        if a:
            e = self.ess
            self.march_kernel[(cdiv(a, BLOCK),)](
                st, a, st.stride(0), e.table, e.net_table, *self.offset, *self.scale, *self.upper, *self.strides,
                *self.lo, *self.cell, *self.factor, self.n_networks, t, net, local, count,
                NJ=int(n_jumps), W=int(w), S=int(s), BLOCK=BLOCK, num_warps=4)
        return t, net, local, count

    def warm_up(self, sizes) -> None:
        """Compile the kernels for the (jumps, window, samples) of ``sizes`` now (a kernel variant
        per pass size: they are compile-time constants), so the first frames do not stall."""
        dev = self.ess.table.device
        st = torch.zeros(1, 15, device=dev)
        st[:, 9] = -1.0  # t1 < t0: the ray is past its end, nothing is sampled
        act = torch.zeros(1, device=dev, dtype=torch.int64)
        acc, lt = torch.zeros(1, 6, device=dev), torch.zeros(1, device=dev)
        for jumps, w, s in sizes:
            t, _, _, count = self.march(st, jumps, w, s)
            self.composite(torch.zeros(s, 4, device=dev), t, count, st, act, s, acc, lt, 0.01)

    def composite(self, out: torch.Tensor, t: torch.Tensor, count: torch.Tensor, st: torch.Tensor,
                  act: torch.Tensor, s: int, acc_out: torch.Tensor, log_trans: torch.Tensor,
                  ert_threshold: float) -> torch.Tensor:
        """Composite the slots of one pass (``out``: (A*S, 4) sigma, rgb of the network kernel)
        into ``acc_out`` (R, 6) rows ``act``, continue and store each ray's log transmittance
        (``st`` and ``log_trans``); returns the retire mask's complement ``keep`` (A,) bool."""
        a = st.shape[0]
        keep = torch.empty(a, device=st.device, dtype=torch.bool)
        if a:
            log_thr = math.log(ert_threshold) if ert_threshold > 0 else -3.0e38
            self.composite_kernel[(cdiv(a, BLOCK),)](
                out, t, count, st, a, st.stride(0), act, acc_out, log_trans, float(log_thr), keep,
                S=int(s), BLOCK=BLOCK, num_warps=4)
        return keep


@functools.cache
def _kernels():
    """Compile-on-demand definitions (Triton is imported only here)."""
    triton = bind_triton(globals())

    # columns of the packed ray state (models/backends/kilonerf.py): origin 0-2, direction 3-5,
    # unit direction 6-8, t1 9, dt 10, lattice index 11, log T 12, jump length 13, t0 14

    @triton.jit
    def _voxel(px, py, pz, ox, oy, oz, sx, sy, sz, ux, uy, uz):
        """World point -> clamped continuous voxel coordinates of the bordered tables."""
        qx = tl.minimum(tl.maximum(ox + px * sx, 0.0), ux)
        qy = tl.minimum(tl.maximum(oy + py * sy, 0.0), uy)
        qz = tl.minimum(tl.maximum(oz + pz * sz, 0.0), uz)
        return qx, qy, qz

    @triton.jit
    def _ray_state(row, m):
        """The rows ``row`` (masked by ``m``) of the packed ray state: origin, direction, t1, dt,
        lattice index, log T, jump length, t0 (the unit direction is read by the network kernel)."""
        o0 = tl.load(row + 0, mask=m, other=0.0)
        o1 = tl.load(row + 1, mask=m, other=0.0)
        o2 = tl.load(row + 2, mask=m, other=0.0)
        d0 = tl.load(row + 3, mask=m, other=0.0)
        d1 = tl.load(row + 4, mask=m, other=0.0)
        d2 = tl.load(row + 5, mask=m, other=0.0)
        t1 = tl.load(row + 9, mask=m, other=0.0)
        dt = tl.load(row + 10, mask=m, other=0.0)
        i = tl.load(row + 11, mask=m, other=0.0)
        lt = tl.load(row + 12, mask=m, other=0.0)
        jl = tl.load(row + 13, mask=m, other=0.0)
        t0 = tl.load(row + 14, mask=m, other=0.0)
        return o0, o1, o2, d0, d1, d2, t1, dt, i, lt, jl, t0

    globals().update(_voxel=_voxel, _ray_state=_ray_state)

    @triton.jit(do_not_specialize=["A", "ST"])
    def _march(st_ptr, A, ST, dist_ptr, net_ptr, ox, oy, oz, sx, sy, sz, ux, uy, uz, k0, k1, k2,
               lx, ly, lz, cx, cy, cz, fx, fy, fz, M, t_ptr, netout_ptr, local_ptr, count_ptr,
               NJ: tl.constexpr, W: tl.constexpr, S: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = r < A
        row = st_ptr + r.to(tl.int64) * ST
        o0, o1, o2, d0, d1, d2, t1, dt, i, _, jl, t0 = _ray_state(row, m)
        # ---- distance-field jumps: from lattice sample i in an empty voxel at distance k, the
        # next ceil((k - 1) jl) samples are empty too
        for _ in range(NJ):
            t = t0 + (i + 0.5) * dt
            qx, qy, qz = _voxel(o0 + t * d0, o1 + t * d1, o2 + t * d2, ox, oy, oz, sx, sy, sz, ux, uy, uz)
            lin = qx.to(tl.int32) * k0 + qy.to(tl.int32) * k1 + qz.to(tl.int32) * k2
            k = tl.load(dist_ptr + lin, mask=m, other=0).to(tl.float32)
            adv = tl.maximum(tl.ceil(tl.maximum(k - 1.0, 0.0) * jl), 1.0)
            i = i + tl.where(k > 0, adv, 0.0)
        # ---- the window: the first S occupied lattice positions of i .. i + W - 1
        count = tl.zeros([BLOCK], dtype=tl.int32)
        last = tl.zeros([BLOCK], dtype=tl.float32)
        base = r.to(tl.int64) * S
        for w in range(W):
            t = t0 + (i + 0.5 + w) * dt
            px = o0 + t * d0
            py = o1 + t * d1
            pz = o2 + t * d2
            qx, qy, qz = _voxel(px, py, pz, ox, oy, oz, sx, sy, sz, ux, uy, uz)
            lin = qx.to(tl.int32) * k0 + qy.to(tl.int32) * k1 + qz.to(tl.int32) * k2
            occ = m & (t < t1) & (count < S)
            occ = occ & (tl.load(dist_ptr + lin, mask=occ, other=1) == 0)
            # the cell of the voxel and the cell-local coordinates, as KiloNerfGrid.locate
            ex = tl.floor((qx - 1.0) / fx)
            ey = tl.floor((qy - 1.0) / fy)
            ez = tl.floor((qz - 1.0) / fz)
            slot = base + count
            tl.store(t_ptr + slot, t, mask=occ)
            nid = tl.load(net_ptr + lin, mask=occ, other=-1)
            tl.store(netout_ptr + slot, tl.where(nid >= 0, nid, M), mask=occ)
            tl.store(local_ptr + slot * 3 + 0, (px - lx - ex * cx) / cx * 2.0 - 1.0, mask=occ)
            tl.store(local_ptr + slot * 3 + 1, (py - ly - ey * cy) / cy * 2.0 - 1.0, mask=occ)
            tl.store(local_ptr + slot * 3 + 2, (pz - lz - ez * cz) / cz * 2.0 - 1.0, mask=occ)
            last = tl.where(occ, w + 1.0, last)
            count += occ.to(tl.int32)
        for s in range(S):  # unused slots: no network (marked M: sorts after every network)
            tl.store(netout_ptr + base + s, tl.full([BLOCK], 0, tl.int32) + M, mask=m & (s >= count))
        i = i + tl.where(count >= S, last, W * 1.0)
        tl.store(row + 11, i, mask=m)
        tl.store(count_ptr + r, count, mask=m)

    @triton.jit(do_not_specialize=["A", "ST"])
    def _composite(out_ptr, t_ptr, count_ptr, st_ptr, A, ST, act_ptr, acc_ptr, lt_ptr, log_thr, keep_ptr,
                   S: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = r < A
        row = st_ptr + r.to(tl.int64) * ST
        _, _, _, d0, d1, d2, t1, dt, i, lt, _, t0 = _ray_state(row, m)
        count = tl.load(count_ptr + r, mask=m, other=0)
        dn = tl.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
        half = 0.5 * dt
        cr = tl.zeros([BLOCK], dtype=tl.float32)
        cg = tl.zeros([BLOCK], dtype=tl.float32)
        cb = tl.zeros([BLOCK], dtype=tl.float32)
        depth = tl.zeros([BLOCK], dtype=tl.float32)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        base = r.to(tl.int64) * S
        for s in range(S):  # as composite_packed: front to back, optical depth clamped at 1e4
            v = m & (s < count)
            slot = base + s
            tm = tl.load(t_ptr + slot, mask=v, other=0.0)
            sigma = tl.load(out_ptr + slot * 4 + 0, mask=v, other=0.0)
            delta = ((tm + half) - (tm - half)) * dn
            sd = tl.minimum(sigma * delta, 1.0e4)
            wgt = tl.exp(lt) * (1.0 - tl.exp(-sd))
            wgt = tl.where(v, wgt, 0.0)
            cr += wgt * tl.load(out_ptr + slot * 4 + 1, mask=v, other=0.0)
            cg += wgt * tl.load(out_ptr + slot * 4 + 2, mask=v, other=0.0)
            cb += wgt * tl.load(out_ptr + slot * 4 + 3, mask=v, other=0.0)
            depth += wgt * tm
            acc += wgt
            lt = lt - tl.where(v, sd, 0.0)
        tl.store(row + 12, lt, mask=m)
        a = tl.load(act_ptr + r, mask=m, other=0).to(tl.int64)
        tl.store(lt_ptr + a, lt, mask=m)
        dst = acc_ptr + a * 6  # rgb, depth, acc, samples; act holds each ray once: no atomics
        tl.store(dst + 0, tl.load(dst + 0, mask=m, other=0.0) + cr, mask=m)
        tl.store(dst + 1, tl.load(dst + 1, mask=m, other=0.0) + cg, mask=m)
        tl.store(dst + 2, tl.load(dst + 2, mask=m, other=0.0) + cb, mask=m)
        tl.store(dst + 3, tl.load(dst + 3, mask=m, other=0.0) + depth, mask=m)
        tl.store(dst + 4, tl.load(dst + 4, mask=m, other=0.0) + acc, mask=m)
        tl.store(dst + 5, tl.load(dst + 5, mask=m, other=0.0) + count.to(tl.float32), mask=m)
        t_next = t0 + (i + 0.5) * dt
        tl.store(keep_ptr + r, (t_next < t1) & (lt > log_thr), mask=m)

    return _march, _composite
