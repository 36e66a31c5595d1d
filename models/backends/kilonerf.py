"""KiloNeRF backend: a grid of tiny MLPs rendered with empty-space skipping and early ray termination.

Rendering (``render_passes``) follows the paper's fast renderer:

* every ray samples one fixed lattice, ``t_i = t0 + (i + 1/2) dt`` with ``dt = step / |d|`` from
  its entry ``t0`` into the grid box; samples are kept only in occupied voxels of the ESS grid.
  These are the samples of ``OccupancyGrid.march`` (used by fine-tuning), so training and
  rendering see the same samples;
* empty space is crossed by jumps along a Chebyshev distance field of the occupancy grid: from a
  lattice sample in an empty voxel at distance k from the nearest occupied voxel, the next
  ceil((k - 1) * jump_length / step) - 1 samples are empty too (``initial_jumps`` before the
  first pass, ``jumps_per_pass`` before each later one);
* rays are processed in *passes*. Each pass, for every active ray: (1) a window of ``W`` lattice
  positions is tested against the grid and the first ``S`` occupied ones become this pass's
  samples (paper: up to 8 per pass), (2) the samples of all rays are grouped by network and
  evaluated: on CUDA in fp16 by one Triton kernel (``FusedKiloNerf``, see ``KiloNerfBackend.accel``),
  otherwise with batched matmuls (``KiloNerfGrid.evaluate``), (3)
  ``composite_packed`` continues each ray's transmittance from the previous pass
  (``log_trans_init``), (4) rays whose transmittance fell below the ERT threshold (0.01) or that
  left the box retire, and the survivors' packed state (one (A, 15) tensor) is compacted;
* ``S`` grows geometrically after the first pass (most rays end in the first pass; the few left
  are cheap, while every pass costs a fixed number of kernel launches and host syncs);
  ``max_passes`` optionally finishes the stragglers in one last pass without ERT.

Lookups use bordered tables (distance field, voxel -> network), so a lookup is one affine map, a
clamp and one gather. Work per frame: mean samples per ray x 12,160 FLOPs (``flops_per_sample``)
plus W lookups per active ray and pass.

Two implementations of the pass loop give the same samples and images:

* torch ops (``_torch_passes``; CPU, fp32, and CUDA without Triton): ~240 small ops per pass and
  two host syncs (the sample and the ray compaction), plus the tile count on the batched torch
  network path. On an H100 the CPU dispatching them sets the frame time: 16.6-20.2 ms per
  800x800 lego frame with the fused network kernel, whose profile showed 6.7 ms of GPU work;
* the Triton marcher (``_triton_passes``, ``models/backends/kilonerf_march.py``; CUDA fp16, the
  default there): per pass one march kernel (jumps and window), the fused network kernel over
  fixed sample slots, one composite kernel and the ray compaction (one host sync): ~30 ops per
  pass, 5.8-8.2 ms per frame on the same scenes (2.7 ms of GPU work). Numbers and commands:
  docs/benchmarks.md, KiloNeRF.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from models.backends.base import BackendUnavailable, RendererBackend
from models.backends.kilonerf_march import TritonMarcher
from models.cameras import ray_aabb
from models.fields.kilonerf_fused import FusedKiloNerf, triton_available
from models.fields.kilonerf_grid import KiloNerfFieldConfig, KiloNerfGrid, PackedWeights
from models.occupancy import EssGrid
from models.rendering import composite_packed


@dataclass(frozen=True)
class KiloNerfRenderConfig:
    """How the KiloNeRF backend marches rays (stored with the weights in the scene)."""

    step_size: float = 0.01
    """Lattice step along rays in world units (the distillation job derives it from the grid box)."""
    ert_threshold: float = 0.01
    """Early ray termination: a ray stops after the pass in which its transmittance fell below this (0: off)."""
    samples_per_pass: int = 8
    """Occupied samples per ray in the first pass (the paper's renderer: 8)."""
    pass_growth: float = 2.0
    """Samples per pass grow by this factor each pass (1: constant)."""
    max_samples_per_pass: int = 64
    """Cap of the growing samples per pass."""
    window: int = 32
    """Lattice positions tested against the occupancy grid per ray and pass (at least 2 x samples)."""
    initial_jumps: int = 4
    """Distance-field jumps through empty space before the first pass."""
    jumps_per_pass: int = 1
    """Distance-field jumps before each later pass's window."""
    max_passes: int = 0
    """After this many passes the rays still active take all their remaining occupied samples in one
    last pass (no ERT within it: exact, just more samples); 0: no limit."""
    distance_cap: int = 32
    """Largest Chebyshev distance (voxels) stored in the empty-space distance field."""

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "KiloNerfRenderConfig":
        from models.dictconfig import config_from_dict

        return config_from_dict(KiloNerfRenderConfig, d, "KiloNeRF render settings")


# ------------------------------------------------------------------------------------ marching
def jump_lengths(dirs: torch.Tensor, voxel_size: torch.Tensor) -> torch.Tensor:
    """World length a ray (R, 3) can travel while moving at most one voxel along every axis."""
    u = F.normalize(dirs, dim=-1).abs().clamp_min(1e-9)
    return (voxel_size / u).amin(-1)


# columns of the packed per-ray state of the pass loop
_O, _D, _V, _T1, _DT, _I, _LT, _JL, _T0 = slice(0, 3), slice(3, 6), slice(6, 9), 9, 10, 11, 12, 13, 14


def _jump_stage(st, table, offset, scale, lower, upper, strides) -> torch.Tensor:
    """New lattice index of every ray after one jump: from lattice sample i in an empty voxel at
    distance k, samples i .. i + ceil((k - 1) * jl) - 1 are all in empty voxels (they stay within
    the k - 1 empty rings around it)."""
    t = torch.addcmul(st[:, _T0], st[:, _I] + 0.5, st[:, _DT])
    q = torch.clamp(torch.addcmul(offset, torch.addcmul(st[:, _O], t[:, None], st[:, _D]), scale), lower, upper)
    k = table[(q.to(torch.int32) * strides).sum(-1)].float()
    adv = torch.ceil((k - 1.0).clamp_min(0.0) * st[:, _JL]).clamp_min(1.0)
    return st[:, _I] + torch.where(k > 0, adv, torch.zeros_like(adv))


_TRIU: dict = {}


def _row_count(mask: torch.Tensor) -> torch.Tensor:
    """Inclusive running count along dim 1 of a (A, w) bool mask, as int32.

    On CUDA a product with an upper-triangular ones matrix (exact: counts <= w in float16) runs
    on the tensor cores; torch.cumsum over a short innermost dimension took 1.2 ms per pass for
    640k rays x 32 on an H100. Elsewhere plain cumsum.
    """
    if not mask.is_cuda:
        return torch.cumsum(mask.to(torch.int32), 1)
    w = mask.shape[1]
    key = (w, mask.device)
    if key not in _TRIU:
        _TRIU[key] = torch.ones(w, w, device=mask.device, dtype=torch.float16).triu_()
    return (mask.to(torch.float16) @ _TRIU[key]).to(torch.int32)


def _window_stage(st, table, offset, scale, lower, upper, strides, ar, s_pass: int):
    """The window of one pass: lattice positions i .. i + w - 1 of every ray, their voxels, and
    the first ``s_pass`` occupied ones. Returns t_mid (A, w), points (A, w, 3), voxel coords
    (A, w, 3), table indices (A, w), the taken mask (A, w), occupied count (A,), new index (A,)."""
    w = ar.shape[0]
    t_mid = torch.addcmul(st[:, _T0, None], st[:, _I, None] + 0.5 + ar, st[:, _DT, None])
    pts = torch.addcmul(st[:, None, _O], t_mid[..., None], st[:, None, _D])
    q = torch.clamp(torch.addcmul(offset, pts, scale), lower, upper)
    lin = (q.to(torch.int32) * strides).sum(-1)
    occ = (table[lin] == 0) & (t_mid < st[:, _T1, None])
    cum = _row_count(occ)
    take = occ & (cum <= s_pass)
    found = cum[:, -1]
    last = torch.where(take, ar + 1.0, torch.zeros_like(t_mid)).amax(1)
    i_new = st[:, _I] + torch.where(found >= s_pass, last, torch.full_like(last, float(w)))
    return t_mid, pts, q, lin, take, found, i_new


_COMPILED: dict = {}


def _stage(fn, compile: bool):
    if not compile:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


@torch.no_grad()
def render_passes(
    field: KiloNerfGrid,
    ess: EssGrid,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    background: torch.Tensor | None,
    config: KiloNerfRenderConfig,
    packed: PackedWeights | FusedKiloNerf | None = None,
    max_candidates: int = 1 << 24,
    compile: bool = False,
    marcher: TritonMarcher | None = None,
) -> dict[str, torch.Tensor]:
    """Render rays (R, 3) with ESS + ERT in passes (see the module docstring).

    Returns rgb (R, 3) (over ``background`` when given), depth (R,), acc (R,), samples (R,)
    (network evaluations per ray), trans (R,) (final transmittance) and passes (0-d).
    ``packed``: the networks' inference weights: fp16/fp32 ``PackedWeights`` for the batched torch
    path, or a ``FusedKiloNerf`` (one Triton kernel per evaluation); None: the field's own.
    ``max_candidates`` bounds the lattice positions tested at once in the final pass.
    ``compile``: fuse the jump and window stages with ``torch.compile`` (dynamic shapes; the
    first frames compile for a while), same results.
    ``marcher``: run the passes on the Triton marcher (needs ``packed`` to be a ``FusedKiloNerf``):
    three kernels and one compaction per pass instead of ~240 torch ops.
    """
    if marcher is not None and not isinstance(packed, FusedKiloNerf):
        raise ValueError("the Triton marcher needs the fused network kernel (packed=FusedKiloNerf)")
    c = config
    if ess.net_table is None:
        ess.set_networks(field.cell_to_net)
    dev = origins.device
    r = origins.shape[0]
    acc_out = torch.zeros(r, 6, device=dev)  # rgb, depth, acc, samples
    log_trans = torch.zeros(r, device=dev)
    step = float(c.step_size)

    t0, t1 = ray_aabb(origins, dirs, ess.aabb)
    t0 = torch.maximum(t0, near)
    t1 = torch.minimum(t1, far)
    dnorm = dirs.norm(dim=-1)
    dt = step / dnorm.clamp_min(1e-9)
    act = torch.nonzero(t0 + 0.5 * dt < t1).squeeze(1)  # rays with at least one lattice sample
    # packed per-ray state: origin, direction, unit direction, t1, dt, lattice index i, log T,
    # jump length (in lattice steps, with a safety margin), t0
    jl = jump_lengths(dirs[act], ess.grid.voxel_size) / step * (1.0 - 1e-4)
    st = torch.cat([origins[act], dirs[act], F.normalize(dirs[act], dim=-1), t1[act, None], dt[act, None],
                    torch.zeros_like(jl)[:, None], torch.zeros_like(jl)[:, None], jl[:, None], t0[act, None]], 1)

    if marcher is not None:
        n_pass = _triton_passes(field, marcher, packed, st, act, acc_out, log_trans, c, max_candidates)
    else:
        n_pass = _torch_passes(field, ess, st, act, acc_out, log_trans, c, packed, max_candidates, compile)
    rgb, depth, acc, samples = acc_out[:, 0:3], acc_out[:, 3], acc_out[:, 4], acc_out[:, 5]
    if background is not None:
        rgb = rgb + (1.0 - acc[:, None]) * background
    return {"rgb": rgb, "depth": depth, "acc": acc, "samples": samples,
            "trans": torch.exp(log_trans), "passes": torch.tensor(n_pass)}


def _pass_size(c: KiloNerfRenderConfig, n_pass: int) -> tuple[int, int]:
    """Occupied samples per ray (S) and window (W) of pass ``n_pass`` (not the final pass)."""
    s_pass = max(1, int(min(c.max_samples_per_pass, round(c.samples_per_pass * c.pass_growth ** n_pass))))
    return s_pass, max(c.window, 2 * s_pass)


def pass_sizes(c: KiloNerfRenderConfig) -> list[tuple[int, int, int]]:
    """(jumps, window, samples) of every distinct pass (not the final pass of ``max_passes``)."""
    sizes, k = [], 0
    while True:
        size = (c.initial_jumps if k == 0 else c.jumps_per_pass, *reversed(_pass_size(c, k)))
        if size in sizes:
            return sizes
        sizes.append(size)
        k += 1


def _remaining(st: torch.Tensor) -> int:
    """Most lattice positions any ray of ``st`` has left (the final pass's window; a host sync)."""
    return int(torch.ceil((st[:, _T1] - st[:, _T0]) / st[:, _DT] - st[:, _I]).clamp_min(1).max().item())


def _triton_passes(field, marcher, fused: FusedKiloNerf, st, act, acc_out, log_trans, c: KiloNerfRenderConfig,
                   max_candidates: int) -> int:
    """The pass loop on the Triton marcher (``models/backends/kilonerf_march.py``): per pass the
    march kernel, the fused network kernel over every sample slot, the composite kernel and one
    compaction. Returns the number of passes."""
    n_pass = 0
    while act.numel() > 0:
        last_pass = c.max_passes > 0 and n_pass == c.max_passes - 1
        jumps = c.initial_jumps if n_pass == 0 else c.jumps_per_pass
        n_pass += 1
        if last_pass:
            # every remaining occupied sample: a window of hundreds of positions, which one lane
            # per ray would walk in turn (a first version did: 72.5 ms per frame with max_passes=3
            # on an H100, compiles of new window sizes included; with this torch final pass, 11.1
            # ms on another H100 the same day); the torch window stage tests them in parallel
            if jumps:
                marcher.march(st, jumps, 0, 0)
            w = _remaining(st)
            per = max(1, max_candidates // w)
            for a in range(0, st.shape[0], per):  # slices are views: one_pass updates st in place
                one_pass(field, marcher.ess, st[a:a + per], act[a:a + per], w, w, acc_out, fused)
            log_trans.index_copy_(0, act, st[:, _LT])
            break
        s_pass, w = _pass_size(c, n_pass - 1)
        keep = _triton_pass(marcher, fused, st, act, jumps, w, s_pass, acc_out, log_trans, c)
        keep = torch.nonzero(keep).squeeze(1)
        act, st = act[keep], st[keep]
    return n_pass


def _triton_pass(marcher, fused: FusedKiloNerf, st, act, jumps: int, w: int, s: int, acc_out, log_trans,
                 c: KiloNerfRenderConfig) -> torch.Tensor:
    t, net, local, count = marcher.march(st, jumps, w, s)
    out = fused.rows(local, st[:, _V], net, dirs_per=s, marked=True)
    return marcher.composite(out, t, count, st, act, s, acc_out, log_trans, c.ert_threshold)


def _torch_passes(field, ess, st, act, acc_out, log_trans, c: KiloNerfRenderConfig, packed, max_candidates: int,
                  compile: bool) -> int:
    """The pass loop in torch ops (CPU, fp32, and the GPU without Triton). Returns the number of passes."""
    log_thr = math.log(c.ert_threshold) if c.ert_threshold > 0 else -math.inf
    tables = (ess.table, ess.offset, ess.scale, ess.lower, ess.upper, ess.strides)
    jump = _stage(_jump_stage, compile)
    window = _stage(_window_stage, compile)

    for _ in range(c.initial_jumps):
        st[:, _I] = jump(st, *tables)
    n_pass = 0
    while act.numel() > 0:
        last_pass = c.max_passes > 0 and n_pass == c.max_passes - 1
        if n_pass > 0:
            for _ in range(c.jumps_per_pass):
                st[:, _I] = jump(st, *tables)
        if last_pass:  # every remaining occupied sample, in slices of rays bounding memory
            w = s_pass = _remaining(st)
        else:
            s_pass, w = _pass_size(c, n_pass)
        n_pass += 1
        per = max(1, max_candidates // w) if last_pass else st.shape[0]
        for a in range(0, st.shape[0], per):  # slices are views: one_pass updates st in place
            one_pass(field, ess, st[a:a + per], act[a:a + per], w, s_pass, acc_out, packed, window)
        log_trans.index_copy_(0, act, st[:, _LT])
        if last_pass:
            break
        # retire rays that left the box or whose transmittance fell below the threshold
        t_next = torch.addcmul(st[:, _T0], st[:, _I] + 0.5, st[:, _DT])
        keep = torch.nonzero((t_next < st[:, _T1]) & (st[:, _LT] > log_thr)).squeeze(1)
        act, st = act[keep], st[keep]
    return n_pass


def one_pass(field: KiloNerfGrid, ess: EssGrid, st: torch.Tensor, act: torch.Tensor, w: int, s_pass: int,
             acc_out: torch.Tensor, packed: PackedWeights | FusedKiloNerf | None, window=None) -> None:
    """One pass over the rays of ``st`` (updated in place: lattice index, log T); adds rgb, depth,
    acc and sample counts of the rays ``act`` into ``acc_out``."""
    a = st.shape[0]
    ar = torch.arange(w, device=st.device, dtype=torch.float32)
    t_mid, pts, q, lin, take, found, i_new = (window or _window_stage)(
        st, ess.table, ess.offset, ess.scale, ess.lower, ess.upper, ess.strides, ar, s_pass)
    st[:, _I] = i_new
    rows, cols = torch.nonzero(take, as_tuple=True)  # sorted by ray, then by t
    if rows.numel() == 0:
        return
    # the samples: network from the voxel table, cell from the voxel, local coordinates computed
    # as KiloNerfGrid.locate does (the fine-tuning path)
    net = ess.net_table[lin[rows, cols]]
    cell = torch.floor((q[rows, cols] - 1.0) / ess.factor)
    cs = ess.cell_size
    local = (pts[rows, cols] - ess.aabb[0] - cell * cs) / cs * 2.0 - 1.0
    if isinstance(packed, FusedKiloNerf):
        sigma, rgb = packed(local, st[rows, _V], net, all_valid=True)
    else:
        sigma, rgb = field.evaluate(local, st[rows, _V], net, packed, all_valid=True)
    tm = t_mid[rows, cols]
    half = 0.5 * st[rows, _DT]
    dn = st[:, _D].norm(dim=-1)
    out = composite_packed(sigma, rgb, tm - half, tm + half, rows, a, dn, None, log_trans_init=st[:, _LT])
    st[:, _LT] = out["log_trans"]
    contrib = torch.cat([out["rgb"], out["depth"][:, None], out["acc"][:, None],
                         found.clamp_max(s_pass).to(out["rgb"].dtype)[:, None]], 1)
    acc_out.index_add_(0, act, contrib)


@torch.no_grad()
def marcher_disagreement(field: KiloNerfGrid, ess: EssGrid, config: KiloNerfRenderConfig, fused: FusedKiloNerf,
                         marcher: TritonMarcher, n_rays: int = 4096, seed: int = 0) -> tuple[float, float]:
    """Render ``n_rays`` test rays through the grid box with the Triton marcher and with the torch
    passes (both with the fused network kernel). Returns the mean absolute colour difference and
    the fraction of rays whose colour differs by more than 0.05 (a lattice position flipping across
    a voxel face under a different rounding changes a ray's samples: rare, not zero)."""
    dev = ess.aabb.device
    g = torch.Generator(device=dev).manual_seed(seed)
    lo, hi = ess.aabb[0], ess.aabb[1]
    centre, radius = 0.5 * (lo + hi), 0.75 * float((hi - lo).norm())
    origins = centre + radius * F.normalize(torch.randn(n_rays, 3, device=dev, generator=g), dim=-1)
    target = lo + (hi - lo) * torch.rand(n_rays, 3, device=dev, generator=g)
    dirs = F.normalize(target - origins, dim=-1)
    near, far = torch.zeros(n_rays, device=dev), torch.full((n_rays,), 4.0 * radius, device=dev)
    a = render_passes(field, ess, origins, dirs, near, far, None, config, fused, marcher=marcher)["rgb"]
    b = render_passes(field, ess, origins, dirs, near, far, None, config, fused)["rgb"]
    diff = (a - b).abs().amax(-1)
    return float(diff.mean()), float((diff > 0.05).float().mean())


# ------------------------------------------------------------------------------------- backend
def check_kilonerf_tensors(state: dict[str, torch.Tensor], fcfg: KiloNerfFieldConfig) -> None:
    """Refuse weights whose tables disagree with each other before anything is allocated from them:
    ``cell_to_net`` must name networks 0..M-1 (or -1 for an empty cell) where M is the number of
    networks the weight tensors hold, every layer must have that shape, and the grids must be 3-D."""
    c2n = state.get("field.cell_to_net")
    if c2n is None or c2n.dim() != 3 or c2n.is_floating_point():
        raise ValueError("field.cell_to_net must be a 3-D integer grid")
    shapes = fcfg.layer_shapes()
    first = state.get(f"field.{next(iter(shapes))}")
    if first is None:
        raise ValueError(f"field.{next(iter(shapes))} missing")
    m = int(first.shape[0])
    lo, hi = int(c2n.min()), int(c2n.max())
    if lo < -1 or hi >= m or hi < 0:
        raise ValueError(f"field.cell_to_net names networks {lo}..{hi}, the weights hold {m}")
    for i, (name, (fan_in, fan_out)) in enumerate(shapes.items(), start=1):
        for key, shape in ((f"field.{name}", (m, fan_in, fan_out)), (f"field.b{i}", (m, fan_out))):
            t = state.get(key)
            if t is None or tuple(t.shape) != shape:
                raise ValueError(f"{key}: expected shape {shape}, got {None if t is None else tuple(t.shape)}")
    occ = state.get("ess.occupied")
    if occ is None or occ.dim() != 3:
        raise ValueError("ess.occupied must be a 3-D grid")


class KiloNerfBackend(RendererBackend):
    """Thousands of tiny MLPs with ESS + ERT (Reiser et al. 2021).

    Execution on CUDA in fp16 (the ``accel`` constructor argument, one of ``ACCEL_CHOICES``; from the
    command line ``--accel kilonerf=PATH``):

    * ``"fused"`` / ``"auto"`` (default): the networks are evaluated by one Triton kernel per pass
      (``FusedKiloNerf``) and the passes run on the Triton marcher (``TritonMarcher``: march,
      networks, composite, one compaction), when Triton is importable;
    * ``"fused-net"``: the fused network kernel with the passes in torch ops (for comparisons);
    * ``"torch"``: the batched torch path throughout.

    Each Triton part is checked once when built (the network kernel against the fp32 networks,
    the marcher against the torch passes on a test frame) and abandoned with a note in
    ``accel_note`` if it disagrees. fp32 and CPU rendering always use the torch path.
    """

    name = "kilonerf"
    label = "KiloNeRF"
    ACCEL_CHOICES = ("auto", "fused", "fused-net", "torch")

    def __init__(self, device=None, accel: str = "auto"):
        super().__init__(device, accel)
        self.field: KiloNerfGrid | None = None
        self.ess: EssGrid | None = None
        self.render_config = KiloNerfRenderConfig()
        self._packed: dict[torch.dtype, PackedWeights] = {}
        self.last_passes = 0
        self.compile = False
        """Fuse the marching stages with torch.compile (experimental; the first frames compile)."""
        self.accel_note = ""
        """Why the fused kernel is not used although asked for, if it is not (HUDs, benchmarks)."""
        self._fused: FusedKiloNerf | None = None
        self._fused_failed = False
        self._marcher: TritonMarcher | None = None
        self._marcher_failed = False

    def modules(self):
        return [self.field] if self.field is not None else []

    def to(self, device):
        super().to(device)
        if self.ess is not None:
            self.ess.to(self.device)
        self.invalidate()
        return self

    # -------------------------------------------------------------------------------- loading
    def load(self, scene) -> None:
        tensors, config = self.scene_weights(scene)
        self.ndc = scene.ndc
        self.load_state_dict(tensors, config)

    def load_state_dict(self, state, config=None) -> None:
        config = config or {}
        try:
            fcfg = KiloNerfFieldConfig.from_dict(config["field"]) if "field" in config else KiloNerfFieldConfig()
            rcfg = KiloNerfRenderConfig.from_dict(config["render"]) if "render" in config else self.render_config
            # the box from the manifest when there: a float16 copy of the weights (``export``) rounds
            # the tensor by ~1e-3, which would shift every cell's local frame (and sin(2^9 x) with it)
            aabb = (torch.tensor(config["aabb"], dtype=torch.float32, device=self.device) if "aabb" in config
                    else state["field.aabb"].to(self.device).float())
            check_kilonerf_tensors(state, fcfg)  # before allocating anything they imply
            field = KiloNerfGrid(aabb, state["field.cell_to_net"].to(self.device), fcfg).to(self.device)
            field.load_state_dict({k[len("field."):]: v.to(self.device) for k, v in state.items()
                                   if k.startswith("field.")})
            field.aabb.copy_(aabb)
            occupied = state["ess.occupied"].to(self.device).bool()
            distance = state.get("ess.distance")
            ess = EssGrid(aabb, occupied, distance.to(self.device) if distance is not None else None,
                          rcfg.distance_cap, field.cell_to_net)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise BackendUnavailable(f"KiloNeRF weights unusable: {str(e).splitlines()[0]}") from None
        self.field, self.ess, self.render_config = field.eval(), ess, rcfg
        self.invalidate()

    def set_field(self, field: KiloNerfGrid, ess: EssGrid, render_config: KiloNerfRenderConfig) -> None:
        """Share a (training) field and grid without copying (validation, tests)."""
        self.field, self.ess, self.render_config = field, ess, render_config
        self.invalidate()

    def invalidate(self) -> None:
        """Call after the field's weights changed in place (cached packed copies are dropped)."""
        self._packed.clear()
        self._fused = None
        self._fused_failed = False
        self._marcher = None
        self._marcher_failed = False
        self.accel_note = ""

    def packed(self, dtype: torch.dtype) -> PackedWeights:
        if dtype not in self._packed:
            self._packed[dtype] = self.field.pack(dtype)
        return self._packed[dtype]

    # ------------------------------------------------------------------------- fused kernel
    def _fused_path_possible(self) -> bool:
        return (self.accel in ("auto", "fused", "fused-net") and not self._fused_failed and self.device.type == "cuda"
                and self.field is not None)

    def fused(self) -> FusedKiloNerf | None:
        """The fused kernel with this field's weights (built, compiled and checked on first use),
        or None where it cannot be used (``accel_note`` says why when it was asked for)."""
        if not self._fused_path_possible():
            return None
        if self._fused is None:
            self._fused = self._make_fused()
        return self._fused

    @torch.no_grad()
    def _make_fused(self) -> FusedKiloNerf | None:
        """Build the fused kernel, compile every tile length, and check it against the torch fp16
        path on points of every network."""
        try:
            if not triton_available():
                raise RuntimeError("Triton is not installed")
            field = self.field
            fused = FusedKiloNerf(field)
            fused.warm_up(self.device)
            m = field.n_networks
            g = torch.Generator(device=self.device).manual_seed(1)
            n = max(4 * m, 4096)
            net = torch.arange(n, device=self.device) % (m + 1) - 1  # every network, and "no network"
            local = torch.rand(n, 3, device=self.device, generator=g) * 2 - 1
            dirs = F.normalize(torch.randn(n, 3, device=self.device, generator=g), dim=-1)
            # both fp16 paths against the fp32 networks: the kernel must be about as close as the
            # torch fp16 path (random points reach far outside what a network was trained on,
            # where fp16 rounding in two different orders can differ by more than 2e-2; seen on
            # an H100 with a distilled lego grid: 0.029 between the two fp16 paths)
            ref_s, ref_c = field.evaluate(local, dirs, net, self.packed(torch.float32))

            def error(sig, rgb):
                return max(float((rgb - ref_c).abs().max()), float(((sig - ref_s).abs() / (1.0 + ref_s.abs())).max()))

            err = error(*fused(local, dirs, net))
            err_torch = error(*field.evaluate(local, dirs, net, self.packed(torch.float16)))
            if not math.isfinite(err) or err > max(2e-2, 1.5 * err_torch):
                raise RuntimeError(f"fused kernel disagrees with the fp32 networks (max error {err:.3g}; "
                                   f"torch fp16 path: {err_torch:.3g})")
            return fused
        except Exception as e:  # noqa: BLE001 - any failure means: use the torch path
            self._fused_failed = True
            self._unavailable("fused KiloNeRF kernel", e, "using the torch path")
            return None

    def _unavailable(self, what: str, e: Exception, instead: str) -> None:
        """Say why a Triton part is not used (``accel_note``; a warning when ``accel="fused"``)."""
        first = str(e).splitlines()[0][:200] if str(e) else ""
        self.accel_note = f"{what} unavailable ({type(e).__name__}: {first}); {instead}"
        if self.accel == "fused":
            warnings.warn(self.accel_note, RuntimeWarning, stacklevel=4)

    def marcher(self) -> TritonMarcher | None:
        """The Triton marcher for this grid (built and checked on first use; needs the fused
        network kernel), or None where it cannot be used (``accel_note`` says why)."""
        if self.accel not in ("auto", "fused") or self._marcher_failed or self.fused() is None:
            return None
        if self._marcher is None:
            self._marcher = self._make_marcher()
        return self._marcher

    @torch.no_grad()
    def _make_marcher(self) -> TritonMarcher | None:
        """Build the marcher, compile its kernels, and check a test frame against the torch passes."""
        try:
            if self.ess.net_table is None:
                self.ess.set_networks(self.field.cell_to_net)
            marcher = TritonMarcher(self.ess, self.field.n_networks)
            marcher.warm_up(pass_sizes(self.render_config))
            err, frac = marcher_disagreement(self.field, self.ess, self.render_config, self._fused, marcher)
            if not (err < 2e-3 and frac < 1e-2):
                raise RuntimeError(f"the Triton marcher disagrees with the torch passes (mean colour error "
                                   f"{err:.3g}, {100 * frac:.2f} % of rays off by more than 0.05)")
            return marcher
        except Exception as e:  # noqa: BLE001 - any failure means: march in torch ops
            self._marcher_failed = True
            self._unavailable("Triton marcher", e, "marching in torch ops")
            return None

    def active_path(self) -> str:
        """Which path renders an fp16 CUDA frame: "fused" (Triton marcher and network kernel),
        "fused-net" (network kernel, torch marching), "torch-fp16", or "torch-fp32" (CPU)."""
        if self.device.type != "cuda":
            return "torch-fp32"
        if self._fused is None:
            return "torch-fp16"
        return "fused" if self._marcher is not None else "fused-net"

    # ------------------------------------------------------------------------------ rendering
    def flops_per_sample(self) -> float:
        return self.field.flops_per_sample() if self.field is not None else KiloNerfFieldConfig().flops_per_sample()

    def bytes_per_ray(self) -> int:
        c = self.render_config
        window = max(c.window, 2 * c.samples_per_pass) * 48  # positions, indices, masks
        samples = c.samples_per_pass * 1200  # encodings (fp32 + fp16), activations, tiles
        return window + samples + 256

    def render_rays(self, origins, dirs, near, far, background, outputs, half):
        if self.field is None or self.ess is None:
            raise BackendUnavailable("KiloNeRF backend has no weights loaded")
        dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        weights = (self.fused() if dtype == torch.float16 else None) or self.packed(dtype)
        marcher = self.marcher() if isinstance(weights, FusedKiloNerf) else None
        out = render_passes(self.field, self.ess, origins, dirs, near, far, background, self.render_config,
                            weights, compile=self.compile, marcher=marcher)
        self.last_passes = int(out["passes"])
        return {"rgb": out["rgb"], "depth": out["depth"], "acc": out["acc"], "samples": out["samples"]}
