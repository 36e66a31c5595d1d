"""R2L backend: a neural light field, one network query per ray (no samples along the ray).

Rendering a chunk of rays = encode the rays (K points: positional encoding, or feature-plane
lookups for the "planes" variants; float32) and run the residual MLP once. On CUDA the network runs in fp16 from a persistent half-precision copy of the
weights; three execution paths are available (the ``accel`` constructor argument, one of
``R2LBackend.ACCEL_CHOICES``; from the command line ``--accel r2l=PATH``):

``"fused"`` (default on CUDA when Triton is importable and the width is 64, 128 or 256)
    One Triton kernel per chunk: each program keeps a tile of rays on chip across *all* layers
    (encoding, head, 43 residual blocks, tail), streaming the weights from L2 (``FusedR2L``;
    ``FusedR2LPlanes`` for the feature-plane variants, which gathers the plane texels in the
    kernel). The layer-by-layer
    path moves every activation through memory 88 times; this one reads 24 bytes of ray and
    writes 12 bytes of colour per ray. Checked against the plain path when built (``load`` warms
    it up on a few rays of a scene camera) and abandoned, with a note in ``accel_note``, if it
    disagrees. H100 (2026-11-21), W256D88 at 800x800: network 24-25 ms (~300 TFLOP/s), whole
    ``render()`` 27-33 ms (30-38 FPS); same PSNR as fp32 to 0.01 dB.
``"torch"``
    Plain PyTorch: encoding, then fp16 cuBLAS GEMMs layer by layer (H100: network 45-54 ms plus
    8 ms of encoding per 800x800 W256D88 frame).
``"compile"``
    ``torch.compile`` of the plain network (fp16), for comparison.

On CPU only the plain path exists (float32).

The network was trained for fixed sampling bounds (near/far of its scene, or 0..1 in NDC); the
backend uses those stored bounds whatever a request says, since the light field is only
defined for the sampling it was trained with. R2L has no depth or opacity output.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING

import torch

from models.backends.base import BackendUnavailable, RendererBackend, check_shapes
from models.fields.r2l_mlp import R2LMLP, R2LMLPConfig
from models.triton_support import bind_triton, can_run_kernels, cdiv

if TYPE_CHECKING:
    from models.scene import Scene

class R2LBackend(RendererBackend):
    """The distilled R2L light field as a renderer."""

    name = "r2l"
    label = "R2L"
    supported_outputs = frozenset({"rgb"})
    ACCEL_CHOICES = ("auto", "fused", "torch", "compile")
    """Execution paths on CUDA (see the module docstring); "auto" is "fused" where it works."""

    def __init__(self, device=None, config: R2LMLPConfig = R2LMLPConfig(), accel: str = "auto"):
        super().__init__(device, accel)
        self.config = config
        self.net = R2LMLP(config).to(self.device).eval()
        self.near, self.far = 2.0, 6.0
        """Sampling bounds the network was trained with (0, 1 for NDC scenes)."""
        self.accel_note = ""
        """Why the requested fast path is not used, if it is not (for HUDs and benchmarks)."""
        self._half: R2LMLP | None = None
        self._compiled = None
        self._fused: FusedR2L | FusedR2LPlanes | None = None
        self._fused_failed = False

    # ----------------------------------------------------------------------------- loading
    def modules(self):
        return [self.net]

    def to(self, device):
        super().to(device)
        self._invalidate()
        return self

    def load(self, scene: "Scene") -> None:
        tensors, config = self.scene_weights(scene)
        self.ndc = scene.ndc
        self.load_state_dict(tensors, config)
        self.warm_up(scene)

    def warm_up(self, scene: "Scene") -> None:
        """On CUDA, build (compile, check) the fused kernel now, so the first frame is not slow."""
        if not self._fused_path_possible() or self._fused is not None:
            return
        cams = scene.camera_list("test") or scene.camera_list("train")
        if not cams:
            return
        cam = cams[0].scaled(64, max(1, round(64 * cams[0].height / cams[0].width)))
        from models.backends.base import RenderRequest

        o, d, near, far = self.rays_for(RenderRequest.from_camera(cam, scene.near, scene.far))
        near, far = self.bounds(o.shape[0])
        with torch.no_grad():
            self._fused = self._make_fused(o, d, near, far)

    def load_state_dict(self, state, config=None) -> None:
        config = config or {}
        try:
            cfg = R2LMLPConfig.from_dict(config["mlp"]) if "mlp" in config else self.config
            check_shapes(lambda: R2LMLP(cfg), state, "R2L")
            if cfg != self.config or self.net.config != cfg:
                net = R2LMLP(cfg).to(self.device).eval()
                self.config, self.net = cfg, net
            if "near" in config and "far" in config:
                self.near, self.far = float(config["near"]), float(config["far"])
        except (TypeError, ValueError, AttributeError) as e:
            raise BackendUnavailable(f"R2L network settings in the manifest are invalid ({e})") from None
        try:
            self.net.load_state_dict({k: v.to(self.device, torch.float32) for k, v in state.items()})
        except RuntimeError as e:
            raise BackendUnavailable(f"R2L weights do not match the network shape: {str(e).splitlines()[0]}") from None
        self._invalidate()

    def _invalidate(self) -> None:
        self._half = None
        self._compiled = None
        self._fused = None
        self._fused_failed = False

    # ------------------------------------------------------------------------------ counts
    def flops_per_sample(self) -> float:
        return self.net.flops_per_ray()

    def bytes_per_ray(self) -> int:
        # plain path: fp32 encoding and its temporaries, the fp16 copy, a few activations
        return int(self.config.input_dim * (3 * 4 + 2) + self.config.width * 2 * 4)

    def chunk_size(self) -> int:
        if self.chunk_override:
            return self.chunk_override
        if self.device.type == "cuda" and self._fused_path_possible():
            return 1 << 20  # the fused kernel needs no per-ray scratch memory
        return super().chunk_size()

    # ----------------------------------------------------------------------------- render
    def bounds(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        near = torch.full((n,), 0.0 if self.ndc is not None else self.near, device=self.device)
        far = torch.full((n,), 1.0 if self.ndc is not None else self.far, device=self.device)
        return near, far

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        n = origins.shape[0]
        near, far = self.bounds(n)  # the trained bounds, not the request's
        rgb = None
        if half and self.device.type == "cuda":
            rgb = self._render_cuda(origins, dirs, near, far)
        if rgb is None:
            net = self._half_net() if half else self.net
            enc = net.encode(origins, dirs, near, far)
            rgb = net(enc.to(net.head.weight.dtype))
        return {"rgb": rgb.float(), "samples": torch.ones(n, device=self.device)}

    def _half_net(self) -> R2LMLP:
        if self._half is None:
            self._half = self.net.half_mlp().eval()
        return self._half

    def _fused_path_possible(self) -> bool:
        return (self.accel in ("auto", "fused") and not self._fused_failed and self.device.type == "cuda"
                and (FusedR2L.supports(self.config) or FusedR2LPlanes.supports(self.config)))

    def _render_cuda(self, origins, dirs, near, far) -> torch.Tensor | None:
        if self._fused_path_possible():
            if self._fused is None:
                self._fused = self._make_fused(origins, dirs, near, far)
            if self._fused is not None:
                return self._fused(origins, dirs)
        if self.accel == "compile":
            if self._compiled is None:
                self._compiled = torch.compile(self._half_net(), dynamic=True)
            enc = self.net.encode(origins, dirs, near, far).half()
            return self._compiled(enc)
        return None

    @torch.no_grad()
    def _make_fused(self, origins, dirs, near, far) -> "FusedR2L | FusedR2LPlanes | None":
        """Build the fused kernel and check it against the plain fp16 path on a few rays."""
        try:
            kind = FusedR2LPlanes if self.config.encoding == "planes" else FusedR2L
            fused = kind(self.net, float(near[0]), float(far[0]))
            k = min(origins.shape[0], 4096)
            got = fused(origins[:k], dirs[:k])
            ref = self._half_net()(self.net.encode(origins[:k], dirs[:k], near[:k], far[:k]).half()).float()
            err = float((got - ref).abs().max())
            if not math.isfinite(err) or err > 2e-2:
                raise RuntimeError(f"fused kernel disagrees with the plain path (max abs error {err:.3g})")
            return fused
        except Exception as e:  # noqa: BLE001 - any failure means: use the plain path
            self._fused_failed = True
            self.accel_note = f"fused R2L kernel unavailable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); " \
                              "using the plain fp16 path"
            if self.accel == "fused":
                warnings.warn(self.accel_note, RuntimeWarning, stacklevel=3)
            return None

    def active_path(self) -> str:
        """Which execution path renders now: "fused", "compile", "torch-fp16" or "torch-fp32"."""
        if self.device.type != "cuda":
            return "torch-fp32"
        if self._fused is not None:
            return "fused"
        if self.accel == "compile":
            return "compile"
        return "torch-fp16"


# ===================================================================================== fused
class FusedR2L:
    """The whole R2L network in one Triton kernel (inference, fp16 tensor cores, fp32 accumulate).

    Each program takes a tile of BM rays and keeps its activations in registers from the ray
    to the colour: the 16 points and their encoding are computed in the kernel (sin/cos in
    float32, libdevice-accurate), the head is accumulated group by group over the 21 encoding
    groups, then every residual block does x += W2 relu(W1 x + b1) + b2 with the activations
    split in four column chunks of W/4 (Triton cannot slice register tensors) so that each
    layer is 16 (BM x W/4) @ (W/4 x W/4) tensor-core products; weights (fp16, 11.3 MB for
    W256D88) stream from L2. Only the tile's rays are read and its colours written.
    """

    SUPPORTED_WIDTHS = (64, 128, 256)

    def __init__(self, net: R2LMLP, near: float, far: float, block_m: int = 128, num_warps: int = 8,
                 num_stages: int = 1):
        if not can_run_kernels():
            raise RuntimeError("the fused R2L kernel needs CUDA (or TRITON_INTERPRET=1 for testing on CPU)")
        cfg = net.config
        if not self.supports(cfg):
            raise ValueError(f"fused R2L kernel supports widths {self.SUPPORTED_WIDTHS}, not {cfg.width}")
        self.kernel = _fused_kernel()
        dev = net.head.weight.device
        w, k3, groups = cfg.width, 3 * cfg.n_points, 1 + 2 * cfg.pos_freqs
        self.gp = max(16, 1 << (k3 - 1).bit_length())  # padded group width (48 -> 64)
        with torch.no_grad():
            wh = net.head.weight.detach().float().t().reshape(groups, k3, w)  # (21, 48, W)
            self.wh = torch.zeros(groups, self.gp, w, device=dev)
            self.wh[:, :k3] = wh
            self.wh = self.wh.half().contiguous()
            self.bh = net.head.bias.detach().float().contiguous()
            nb = cfg.n_blocks
            if nb:
                self.w1 = torch.stack([b.fc1.weight.detach().t() for b in net.blocks]).half().contiguous()
                self.b1 = torch.stack([b.fc1.bias.detach() for b in net.blocks]).float().contiguous()
                self.w2 = torch.stack([b.fc2.weight.detach().t() for b in net.blocks]).half().contiguous()
                self.b2 = torch.stack([b.fc2.bias.detach() for b in net.blocks]).float().contiguous()
            else:  # valid pointers for a kernel that never reads them
                self.w1 = self.w2 = torch.zeros(1, w, w, device=dev, dtype=torch.float16)
                self.b1 = self.b2 = torch.zeros(1, w, device=dev)
            self.wt = net.tail.weight.detach().float().contiguous()  # (3, W)
            self.bt = net.tail.bias.detach().float().contiguous()  # (3,)
            steps = torch.linspace(0.0, 1.0, cfg.n_points, device=dev)
            self.t = (near * (1.0 - steps) + far * steps).float().contiguous()  # test-time sampling
            self.freqs = (2.0 ** torch.arange(cfg.pos_freqs, device=dev, dtype=torch.float32)).contiguous()
        self.cfg = cfg
        self.block_m = block_m
        self.num_warps = num_warps
        self.num_stages = num_stages
        """1: no software pipelining of the layer loops (multi-buffering all 32 weight tiles of a
        block would need ~0.8 MB of shared memory)."""

    @classmethod
    def supports(cls, cfg: R2LMLPConfig) -> bool:
        return cfg.encoding == "pe" and cfg.width in cls.SUPPORTED_WIDTHS and 3 * cfg.n_points <= 128

    def __call__(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """origins, dirs (M, 3) -> rgb (M, 3) float32."""
        m = origins.shape[0]
        o = origins.float().contiguous()
        d = dirs.float().contiguous()
        out = torch.empty(m, 3, device=o.device, dtype=torch.float32)
        if m == 0:
            return out
        grid = (cdiv(m, self.block_m),)
        self.kernel[grid](
            o, d, self.t, self.freqs, self.wh, self.bh, self.w1, self.b1, self.w2, self.b2, self.wt, self.bt, out,
            m, W=self.cfg.width, C=self.cfg.width // 4, BM=self.block_m, K3=3 * self.cfg.n_points, GP=self.gp,
            NB=self.cfg.n_blocks, NF=self.cfg.pos_freqs,
            num_warps=self.num_warps, num_stages=self.num_stages,
        )
        return out


@functools.cache
def _fused_kernel():
    """Compile-on-demand definition of the fused kernel (Triton is imported only here)."""
    triton = bind_triton(globals())

    @triton.jit
    def _chunk_dot(h0, h1, h2, h3, w_ptr, W: tl.constexpr, C: tl.constexpr, j: tl.constexpr):
        """Output column chunk j (BM, C) of [h0 h1 h2 h3] @ Wt, Wt (W, W) row-major (in, out)."""
        k = tl.arange(0, C)
        n = j * C + tl.arange(0, C)
        acc = tl.dot(h0, tl.load(w_ptr + k[:, None] * W + n[None, :]))
        acc = tl.dot(h1, tl.load(w_ptr + (C + k[:, None]) * W + n[None, :]), acc=acc)
        acc = tl.dot(h2, tl.load(w_ptr + (2 * C + k[:, None]) * W + n[None, :]), acc=acc)
        acc = tl.dot(h3, tl.load(w_ptr + (3 * C + k[:, None]) * W + n[None, :]), acc=acc)
        return acc

    globals()["_chunk_dot"] = _chunk_dot

    @triton.jit
    def _r2l_fused(o_ptr, d_ptr, t_ptr, f_ptr, wh_ptr, bh_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, wt_ptr, bt_ptr,
                   out_ptr, M,
                   W: tl.constexpr, C: tl.constexpr, BM: tl.constexpr, K3: tl.constexpr, GP: tl.constexpr,
                   NB: tl.constexpr, NF: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        rmask = rows < M
        # ---- the K points of each ray, xyz interleaved: column g = 3k + axis (padding: 0)
        g = tl.arange(0, GP)
        gmask = g < K3
        axis = g % 3
        tk = tl.load(t_ptr + g // 3, mask=gmask, other=0.0)
        m2 = rmask[:, None] & gmask[None, :]
        o = tl.load(o_ptr + rows[:, None] * 3 + axis[None, :], mask=m2, other=0.0)
        d = tl.load(d_ptr + rows[:, None] * 3 + axis[None, :], mask=m2, other=0.0)
        p = o + tk[None, :] * d  # (BM, GP) float32
        # ---- head: sum over encoding groups [raw, sin f0, cos f0, ..., sin f(L-1), cos f(L-1)]
        c = tl.arange(0, C)
        wg = wh_ptr + g[:, None] * W + c[None, :]  # group 0, column chunk 0
        f16 = p.to(tl.float16)
        h0 = tl.dot(f16, tl.load(wg))
        h1 = tl.dot(f16, tl.load(wg + C))
        h2 = tl.dot(f16, tl.load(wg + 2 * C))
        h3 = tl.dot(f16, tl.load(wg + 3 * C))
        for fi in range(NF):
            xb = p * tl.load(f_ptr + fi)
            sn = libdevice.sin(xb).to(tl.float16)
            cs = libdevice.cos(xb).to(tl.float16)
            ws = wg + (1 + 2 * fi) * GP * W
            wc = wg + (2 + 2 * fi) * GP * W
            h0 = tl.dot(cs, tl.load(wc), acc=tl.dot(sn, tl.load(ws), acc=h0))
            h1 = tl.dot(cs, tl.load(wc + C), acc=tl.dot(sn, tl.load(ws + C), acc=h1))
            h2 = tl.dot(cs, tl.load(wc + 2 * C), acc=tl.dot(sn, tl.load(ws + 2 * C), acc=h2))
            h3 = tl.dot(cs, tl.load(wc + 3 * C), acc=tl.dot(sn, tl.load(ws + 3 * C), acc=h3))
        x0 = tl.maximum(h0 + tl.load(bh_ptr + c)[None, :], 0.0).to(tl.float16)
        x1 = tl.maximum(h1 + tl.load(bh_ptr + C + c)[None, :], 0.0).to(tl.float16)
        x2 = tl.maximum(h2 + tl.load(bh_ptr + 2 * C + c)[None, :], 0.0).to(tl.float16)
        x3 = tl.maximum(h3 + tl.load(bh_ptr + 3 * C + c)[None, :], 0.0).to(tl.float16)
        # ---- residual blocks: x += W2 relu(W1 x + b1) + b2
        for blk in range(NB):
            w1 = w1_ptr + blk * W * W
            w2 = w2_ptr + blk * W * W
            b1 = b1_ptr + blk * W
            b2 = b2_ptr + blk * W
            t0 = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 0) + tl.load(b1 + c)[None, :], 0.0).to(tl.float16)
            t1 = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 1) + tl.load(b1 + C + c)[None, :], 0.0).to(tl.float16)
            t2 = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 2) + tl.load(b1 + 2 * C + c)[None, :],
                            0.0).to(tl.float16)
            t3 = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 3) + tl.load(b1 + 3 * C + c)[None, :],
                            0.0).to(tl.float16)
            x0 = (x0.to(tl.float32) + _chunk_dot(t0, t1, t2, t3, w2, W, C, 0)
                  + tl.load(b2 + c)[None, :]).to(tl.float16)
            x1 = (x1.to(tl.float32) + _chunk_dot(t0, t1, t2, t3, w2, W, C, 1)
                  + tl.load(b2 + C + c)[None, :]).to(tl.float16)
            x2 = (x2.to(tl.float32) + _chunk_dot(t0, t1, t2, t3, w2, W, C, 2)
                  + tl.load(b2 + 2 * C + c)[None, :]).to(tl.float16)
            x3 = (x3.to(tl.float32) + _chunk_dot(t0, t1, t2, t3, w2, W, C, 3)
                  + tl.load(b2 + 3 * C + c)[None, :]).to(tl.float16)
        # ---- tail (W -> 3) + sigmoid, as row reductions: a 16-column tensor-core product here
        # was miscompiled for W = 256 by Triton 3.6 on the H100 (wrong colours, then an illegal
        # address); 768 MACs per ray do not need tensor cores anyway
        for j in tl.static_range(3):
            wr = wt_ptr + j * W + c
            acc = tl.sum(x0.to(tl.float32) * tl.load(wr)[None, :], axis=1)
            acc += tl.sum(x1.to(tl.float32) * tl.load(wr + C)[None, :], axis=1)
            acc += tl.sum(x2.to(tl.float32) * tl.load(wr + 2 * C)[None, :], axis=1)
            acc += tl.sum(x3.to(tl.float32) * tl.load(wr + 3 * C)[None, :], axis=1)
            tl.store(out_ptr + rows * 3 + j, tl.sigmoid(acc + tl.load(bt_ptr + j)), mask=rmask)

    return _r2l_fused


# ============================================================================ fused, planes
class FusedR2LPlanes:
    """The feature-plane R2L variant in one Triton kernel (inference, fp16 tensor cores).

    Each program takes a tile of BM rays and, without leaving the chip: clips the rays to the
    network's box, places the K test-time points, gathers their tri-plane features (per point,
    level and plane: the coordinate arithmetic once per ray, then 4 bilinear texels of 8 or 16
    fp16 channels, 16-byte loads), multiplies the planes, and accumulates the head layer group by group as tensor-core products;
    then the ray's encoded Pluecker coordinates, the residual blocks and the tail, as in
    ``FusedR2L``. Reads 24 bytes of ray and writes 12 bytes of colour per ray; the planes
    (fp16) and weights stream from L2. With an occupancy mask, a point that lies in empty cells on
    every ray of the tile is skipped: no lookups and no head products (its features are zero).
    """

    SUPPORTED_WIDTHS = (64, 128, 256)

    def __init__(self, net: R2LMLP, near: float, far: float, block_m: int | None = None,
                 num_warps: int | None = None, num_stages: int = 1):
        if not can_run_kernels():
            raise RuntimeError("the fused R2L kernel needs CUDA (or TRITON_INTERPRET=1 for testing on CPU)")
        cfg = net.config
        if not self.supports(cfg):
            raise ValueError(f"fused planes R2L kernel does not support {cfg.name}")
        # W256: 128 rays x 8 warps, 1.9-2.2x faster than 64 x 8 for K64 and K128 on an H200 (800x800,
        # benchmarks/r2l_render.py --sweep; docs/benchmarks.md); 4 accumulator chunks of BM x W/4 in registers
        block_m = block_m or (128 if cfg.width >= 256 else 64)
        num_warps = num_warps or (8 if cfg.width >= 256 else 4)
        _fused_kernel()  # binds _chunk_dot
        self.kernel = _planes_kernel()
        dev = net.head.weight.device
        w, lc = cfg.width, cfg.point_features
        with torch.no_grad():
            wt = net.head.weight.detach().float().t()  # (input_dim, W)
            wf = wt[: cfg.n_points * lc]  # point features (K * L * C, W), rows level-major per point
            if cfg.plane_channels == 8:  # the kernel interleaves two levels' channels: column 2c + s
                n = torch.arange(wf.shape[0], device=dev)
                grp, col = n // 16, n % 16
                wf = wf[grp * 16 + (col % 2) * 8 + col // 2]
            self.wf = wf.half().contiguous()
            self.wr = torch.zeros(64, w, device=dev)
            self.wr[: cfg.ray_features] = wt[cfg.n_points * lc :]
            self.wr = self.wr.half().contiguous()  # ray features, padded to 64 rows
            self.bh = net.head.bias.detach().float().contiguous()
            nb = cfg.n_blocks
            if nb:
                self.w1 = torch.stack([b.fc1.weight.detach().t() for b in net.blocks]).half().contiguous()
                self.b1 = torch.stack([b.fc1.bias.detach() for b in net.blocks]).float().contiguous()
                self.w2 = torch.stack([b.fc2.weight.detach().t() for b in net.blocks]).half().contiguous()
                self.b2 = torch.stack([b.fc2.bias.detach() for b in net.blocks]).float().contiguous()
            else:
                self.w1 = self.w2 = torch.zeros(1, w, w, device=dev, dtype=torch.float16)
                self.b1 = self.b2 = torch.zeros(1, w, device=dev)
            self.wt = net.tail.weight.detach().float().contiguous()
            self.bt = net.tail.bias.detach().float().contiguous()
            self.table = net.planes.table.detach().half().contiguous()
            self.res = torch.tensor(cfg.plane_resolutions, dtype=torch.int32, device=dev)
            self.off = torch.tensor(net.planes.offsets, dtype=torch.int64, device=dev)
            box = net.box.detach().float()
            self.box = torch.cat([box[0], box[1]]).contiguous()  # lo xyz, hi xyz
            self.mask = (net.mask.detach().contiguous() if cfg.mask_resolution
                         else torch.ones(1, device=dev, dtype=torch.uint8))
        self.near, self.far = float(near), float(far)
        self.cfg = cfg
        self.block_m, self.num_warps, self.num_stages = block_m, num_warps, num_stages

    @classmethod
    def supports(cls, cfg: R2LMLPConfig) -> bool:
        return (cfg.encoding == "planes" and cfg.width in cls.SUPPORTED_WIDTHS and cfg.n_points >= 2
                and cfg.plane_channels in (8, 16) and cfg.point_features % 16 == 0
                and cfg.ray_features <= 64)

    def __call__(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """origins, dirs (M, 3) -> rgb (M, 3) float32."""
        m = origins.shape[0]
        o = origins.float().contiguous()
        d = dirs.float().contiguous()
        out = torch.empty(m, 3, device=o.device, dtype=torch.float32)
        if m == 0:
            return out
        c = self.cfg
        grid = (cdiv(m, self.block_m),)
        self.kernel[grid](
            o, d, self.box, self.mask, self.table, self.res, self.off, self.wf, self.wr, self.bh, self.w1, self.b1,
            self.w2, self.b2, self.wt, self.bt, out, m, self.near, self.far,
            W=c.width, C=c.width // 4, BM=self.block_m, K=c.n_points, CH=c.plane_channels,
            LC=c.point_features, NRF=c.ray_freqs, NB=c.n_blocks, MR=c.mask_resolution,
            num_warps=self.num_warps, num_stages=self.num_stages,
        )
        return out


@functools.cache
def _planes_kernel():
    """Compile-on-demand definition of the fused planes kernel."""
    triton = bind_triton(globals())

    @triton.jit
    def _bilerp(table, base, r, a, b, rmask, ch, CH: tl.constexpr):
        """Bilinear lookup (BM, CH) of one plane of side r starting at ``base``: the coordinate
        arithmetic on (BM,) vectors, then four 16-byte loads of CH fp16 channels per ray."""
        rf = r.to(tl.float32)
        fa = ((a + 1.0) * rf - 1.0) * 0.5
        fb = ((b + 1.0) * rf - 1.0) * 0.5
        a0f = tl.floor(fa)
        b0f = tl.floor(fb)
        wa1 = fa - a0f
        wb1 = fb - b0f
        wa0 = 1.0 - wa1
        wb0 = 1.0 - wb1
        a0 = a0f.to(tl.int32)
        b0 = b0f.to(tl.int32)
        va0 = (a0 >= 0) & (a0 < r)
        va1 = (a0 >= -1) & (a0 + 1 < r)
        vb0 = (b0 >= 0) & (b0 < r) & rmask
        vb1 = (b0 >= -1) & (b0 + 1 < r) & rmask
        row = tl.multiple_of(base + ((b0 * r + a0) * CH).to(tl.int64), CH)
        p00 = table + row[:, None] + ch[None, :]
        p10 = p00 + (r * CH).to(tl.int64)
        acc = tl.load(p00, mask=(va0 & vb0)[:, None], other=0.0).to(tl.float32) * (wa0 * wb0)[:, None]
        acc += tl.load(p00 + CH, mask=(va1 & vb0)[:, None], other=0.0).to(tl.float32) * (wa1 * wb0)[:, None]
        acc += tl.load(p10, mask=(va0 & vb1)[:, None], other=0.0).to(tl.float32) * (wa0 * wb1)[:, None]
        acc += tl.load(p10 + CH, mask=(va1 & vb1)[:, None], other=0.0).to(tl.float32) * (wa1 * wb1)[:, None]
        return acc

    globals()["_bilerp"] = _bilerp

    @triton.jit
    def _level_features(table, res_ptr, off_ptr, lvl, px, py, pz, rmask, ch, CH: tl.constexpr):
        """(BM, CH) features of one level: the product of its three planes' lookups."""
        r = tl.load(res_ptr + lvl)
        base = tl.load(off_ptr + lvl)
        plane = (r * r * CH).to(tl.int64)
        f = _bilerp(table, base, r, px, py, rmask, ch, CH)
        f *= _bilerp(table, base + plane, r, px, pz, rmask, ch, CH)
        f *= _bilerp(table, base + 2 * plane, r, py, pz, rmask, ch, CH)
        return f

    globals()["_level_features"] = _level_features

    @triton.jit
    def _head_chunks(h0, h1, h2, h3, f16, w_ptr, W: tl.constexpr, C: tl.constexpr):
        """h_j += f16 (BM, 16) @ W[16 rows starting at w_ptr, column chunk j]."""
        k = tl.arange(0, 16)
        c = tl.arange(0, C)
        wp = w_ptr + k[:, None] * W + c[None, :]
        h0 = tl.dot(f16, tl.load(wp), acc=h0)
        h1 = tl.dot(f16, tl.load(wp + C), acc=h1)
        h2 = tl.dot(f16, tl.load(wp + 2 * C), acc=h2)
        h3 = tl.dot(f16, tl.load(wp + 3 * C), acc=h3)
        return h0, h1, h2, h3

    globals()["_head_chunks"] = _head_chunks

    @triton.jit
    def _r2l_planes(o_ptr, d_ptr, box_ptr, mask_ptr, table, res_ptr, off_ptr, wf_ptr, wr_ptr, bh_ptr, w1_ptr,
                    b1_ptr, w2_ptr, b2_ptr, wt_ptr, bt_ptr, out_ptr, M, near, far,
                    W: tl.constexpr, C: tl.constexpr, BM: tl.constexpr, K: tl.constexpr, CH: tl.constexpr,
                    LC: tl.constexpr, NRF: tl.constexpr, NB: tl.constexpr, MR: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        rmask = rows < M
        ox = tl.load(o_ptr + rows * 3 + 0, mask=rmask, other=0.0)
        oy = tl.load(o_ptr + rows * 3 + 1, mask=rmask, other=0.0)
        oz = tl.load(o_ptr + rows * 3 + 2, mask=rmask, other=0.0)
        dx = tl.load(d_ptr + rows * 3 + 0, mask=rmask, other=1.0)
        dy = tl.load(d_ptr + rows * 3 + 1, mask=rmask, other=1.0)
        dz = tl.load(d_ptr + rows * 3 + 2, mask=rmask, other=1.0)
        lox = tl.load(box_ptr + 0)
        loy = tl.load(box_ptr + 1)
        loz = tl.load(box_ptr + 2)
        hix = tl.load(box_ptr + 3)
        hiy = tl.load(box_ptr + 4)
        hiz = tl.load(box_ptr + 5)
        # ---- the ray's part inside the box (models.cameras.ray_aabb, then box_segments)
        ix = 1.0 / tl.where(tl.abs(dx) < 1e-12, 1e-12, dx)
        iy = 1.0 / tl.where(tl.abs(dy) < 1e-12, 1e-12, dy)
        iz = 1.0 / tl.where(tl.abs(dz) < 1e-12, 1e-12, dz)
        ax, bx = (lox - ox) * ix, (hix - ox) * ix
        ay, by = (loy - oy) * iy, (hiy - oy) * iy
        az, bz = (loz - oz) * iz, (hiz - oz) * iz
        t0 = tl.maximum(tl.maximum(tl.minimum(ax, bx), tl.minimum(ay, by)), tl.minimum(az, bz))
        t1 = tl.minimum(tl.minimum(tl.maximum(ax, bx), tl.maximum(ay, by)), tl.maximum(az, bz))
        t0 = tl.minimum(tl.maximum(t0, near), far)
        t1 = tl.maximum(tl.minimum(t1, far), t0)
        cx, cy, cz = 0.5 * (lox + hix), 0.5 * (loy + hiy), 0.5 * (loz + hiz)
        hx = tl.maximum(0.5 * (hix - lox), 1e-6)
        hy = tl.maximum(0.5 * (hiy - loy), 1e-6)
        hz = tl.maximum(0.5 * (hiz - loz), 1e-6)
        c = tl.arange(0, C)
        h0 = tl.zeros([BM, C], dtype=tl.float32)
        h1 = tl.zeros([BM, C], dtype=tl.float32)
        h2 = tl.zeros([BM, C], dtype=tl.float32)
        h3 = tl.zeros([BM, C], dtype=tl.float32)
        # ---- point features, 16 columns at a time: one level of 16 channels, or two levels of 8
        # interleaved channel by channel (tl.join; the head's weight rows are permuted to match)
        ch = tl.arange(0, CH)
        for k in range(K):
            tk = t0 + (t1 - t0) * (k * (1.0 / (K - 1)))
            px = (ox + tk * dx - cx) / hx
            py = (oy + tk * dy - cy) / hy
            pz = (oz + tk * dz - cz) / hz
            if MR > 0:  # occupancy mask: points in empty cells read no texels (their features are 0)
                mi = tl.floor((px + 1.0) * (0.5 * MR)).to(tl.int32)
                mj = tl.floor((py + 1.0) * (0.5 * MR)).to(tl.int32)
                mk = tl.floor((pz + 1.0) * (0.5 * MR)).to(tl.int32)
                inside = (mi >= 0) & (mi < MR) & (mj >= 0) & (mj < MR) & (mk >= 0) & (mk < MR) & rmask
                kept = tl.load(mask_ptr + (mi * MR + mj) * MR + mk, mask=inside, other=0)
                pmask = inside & (kept != 0)
                # a point that is empty on every ray of the tile adds nothing to the head: skip its
                # lookups and its head products (tiles are runs of neighbouring pixels, so whole
                # tiles see the same empty space)
                live = tl.max(pmask.to(tl.int32), axis=0) > 0
            else:
                pmask = rmask
                live = True
            if live:
                for g in tl.static_range(LC // 16):
                    if CH == 16:
                        f = _level_features(table, res_ptr, off_ptr, g, px, py, pz, pmask, ch, CH)
                    else:
                        fa = _level_features(table, res_ptr, off_ptr, 2 * g, px, py, pz, pmask, ch, CH)
                        fb = _level_features(table, res_ptr, off_ptr, 2 * g + 1, px, py, pz, pmask, ch, CH)
                        f = tl.reshape(tl.join(fa, fb), (BM, 16))
                    h0, h1, h2, h3 = _head_chunks(h0, h1, h2, h3, f.to(tl.float16),
                                                  wf_ptr + (k * LC + g * 16) * W, W, C)
        # ---- the ray's encoded Pluecker coordinates: [v (6), sin(2^0 v), cos(2^0 v), ...], padded to 64
        nx, ny, nz = dx / hx, dy / hy, dz / hz
        inv = 1.0 / tl.maximum(tl.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
        nx, ny, nz = nx * inv, ny * inv, nz * inv
        qx, qy, qz = (ox - cx) / hx, (oy - cy) / hy, (oz - cz) / hz
        mx = qy * nz - qz * ny
        my = qz * nx - qx * nz
        mz = qx * ny - qy * nx
        j64 = tl.arange(0, 64)
        coord = tl.where(j64 < 6, j64, (j64 - 6) % 6)
        grp = tl.where(j64 < 6, 0, (j64 - 6) // 6)
        v = tl.where(coord[None, :] == 0, nx[:, None],
            tl.where(coord[None, :] == 1, ny[:, None],
            tl.where(coord[None, :] == 2, nz[:, None],
            tl.where(coord[None, :] == 3, mx[:, None],
            tl.where(coord[None, :] == 4, my[:, None], mz[:, None])))))
        freq = tl.exp2((grp // 2).to(tl.float32))
        arg = v * freq[None, :]
        enc = tl.where(j64[None, :] < 6, v,
              tl.where((grp % 2)[None, :] == 0, libdevice.sin(arg), libdevice.cos(arg)))
        enc = tl.where(j64[None, :] < 6 + 12 * NRF, enc, 0.0).to(tl.float16)
        wr = wr_ptr + j64[:, None] * W + c[None, :]
        h0 = tl.dot(enc, tl.load(wr), acc=h0)
        h1 = tl.dot(enc, tl.load(wr + C), acc=h1)
        h2 = tl.dot(enc, tl.load(wr + 2 * C), acc=h2)
        h3 = tl.dot(enc, tl.load(wr + 3 * C), acc=h3)
        x0 = tl.maximum(h0 + tl.load(bh_ptr + c)[None, :], 0.0).to(tl.float16)
        x1 = tl.maximum(h1 + tl.load(bh_ptr + C + c)[None, :], 0.0).to(tl.float16)
        x2 = tl.maximum(h2 + tl.load(bh_ptr + 2 * C + c)[None, :], 0.0).to(tl.float16)
        x3 = tl.maximum(h3 + tl.load(bh_ptr + 3 * C + c)[None, :], 0.0).to(tl.float16)
        # ---- residual blocks and tail, as in _r2l_fused
        for blk in range(NB):
            w1 = w1_ptr + blk * W * W
            w2 = w2_ptr + blk * W * W
            b1 = b1_ptr + blk * W
            b2 = b2_ptr + blk * W
            t0_ = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 0) + tl.load(b1 + c)[None, :], 0.0).to(tl.float16)
            t1_ = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 1) + tl.load(b1 + C + c)[None, :],
                             0.0).to(tl.float16)
            t2_ = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 2) + tl.load(b1 + 2 * C + c)[None, :],
                             0.0).to(tl.float16)
            t3_ = tl.maximum(_chunk_dot(x0, x1, x2, x3, w1, W, C, 3) + tl.load(b1 + 3 * C + c)[None, :],
                             0.0).to(tl.float16)
            x0 = (x0.to(tl.float32) + _chunk_dot(t0_, t1_, t2_, t3_, w2, W, C, 0)
                  + tl.load(b2 + c)[None, :]).to(tl.float16)
            x1 = (x1.to(tl.float32) + _chunk_dot(t0_, t1_, t2_, t3_, w2, W, C, 1)
                  + tl.load(b2 + C + c)[None, :]).to(tl.float16)
            x2 = (x2.to(tl.float32) + _chunk_dot(t0_, t1_, t2_, t3_, w2, W, C, 2)
                  + tl.load(b2 + 2 * C + c)[None, :]).to(tl.float16)
            x3 = (x3.to(tl.float32) + _chunk_dot(t0_, t1_, t2_, t3_, w2, W, C, 3)
                  + tl.load(b2 + 3 * C + c)[None, :]).to(tl.float16)
        for jc in tl.static_range(3):
            wrow = wt_ptr + jc * W + c
            acc = tl.sum(x0.to(tl.float32) * tl.load(wrow)[None, :], axis=1)
            acc += tl.sum(x1.to(tl.float32) * tl.load(wrow + C)[None, :], axis=1)
            acc += tl.sum(x2.to(tl.float32) * tl.load(wrow + 2 * C)[None, :], axis=1)
            acc += tl.sum(x3.to(tl.float32) * tl.load(wrow + 3 * C)[None, :], axis=1)
            tl.store(out_ptr + rows * 3 + jc, tl.sigmoid(acc + tl.load(bt_ptr + jc)), mask=rmask)

    return _r2l_planes
