"""KiloNeRF: parameter counts, batched evaluation vs a per-network loop, ESS, ERT, the backend.

The CPU end-to-end distillation test lives in test_kilonerf_distill.py.
"""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.backends.base import RenderAborted, RenderRequest
from models.backends.kilonerf import KiloNerfBackend, KiloNerfRenderConfig, pass_sizes, render_passes
from models.cameras import Camera, camera_rays, look_at
from models.encoding import positional_encoding
from models.fields.kilonerf_grid import KiloNerfFieldConfig, KiloNerfGrid, tile_layout, tile_upper_bound
from models.occupancy import EssGrid, OccupancyGrid, empty_space_distance
from models.rendering import composite_packed

ROOT = Path(__file__).resolve().parents[1]
AABB = torch.tensor([[-1.0, -1.2, -0.6], [1.0, 1.3, 0.7]])
RES = (4, 5, 3)


def random_field(seed: int = 0, frac: float = 0.6, density: float = 40.0) -> KiloNerfGrid:
    """A grid with networks in about ``frac`` of the cells, random weights, densities up to ``density``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(RES, generator=g) < frac
    c2n = torch.full(RES, -1)
    c2n[mask] = torch.arange(int(mask.sum()))
    f = KiloNerfGrid(AABB, c2n, seed=seed)
    with torch.no_grad():
        for p in f.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)  # make the networks differ
        f.b3[:, 0] = torch.rand(f.n_networks, generator=g) * density  # density bias per network
    return f


def reference_loop(field: KiloNerfGrid, local, dirs, net):
    """The per-network loop the batched path must reproduce (test-only)."""
    sigma, rgb = torch.zeros(local.shape[0]), torch.zeros(local.shape[0], 3)
    c = field.config
    for m in range(field.n_networks):
        sel = net == m
        x, d = positional_encoding(local[sel], c.pos_freqs), positional_encoding(dirs[sel], c.dir_freqs)
        h = torch.relu(x @ field.w1[m] + field.b1[m])
        h = torch.relu(h @ field.w2[m] + field.b2[m])
        o = h @ field.w3[m] + field.b3[m]
        h = torch.relu(torch.cat([o[:, 1:], d], -1) @ field.w4[m] + field.b4[m])
        sigma = sigma.index_put((torch.nonzero(sel).squeeze(1),), torch.relu(o[:, 0]))
        rgb = rgb.index_put((torch.nonzero(sel).squeeze(1),), torch.sigmoid(h @ field.w5[m] + field.b5[m]))
    return sigma, rgb


def random_points(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lo, hi = AABB[0] - 0.2, AABB[1] + 0.2  # some points outside the box
    pts = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    return pts, F.normalize(torch.randn(n, 3, generator=g), dim=-1)


# ----------------------------------------------------------------------------------- counts
def test_parameter_and_flop_counts_match_the_paper():
    cfg = KiloNerfFieldConfig()
    shapes = cfg.layer_shapes()
    assert shapes == {"w1": (63, 32), "w2": (32, 32), "w3": (32, 33), "w4": (59, 32), "w5": (32, 3)}
    # (63*32 + 32) + (32*32 + 32) + (32*33 + 33) + (59*32 + 32) + (32*3 + 3) = 6212
    assert cfg.params_per_network() == 2048 + 1056 + 1089 + 1920 + 99 == 6212
    assert random_field().params_per_network() == 6212
    assert cfg.flops_per_sample() == 2 * (63 * 32 + 32 * 32 + 32 * 33 + 59 * 32 + 32 * 3) == 12160


# ------------------------------------------------------------------------ batched evaluation
@pytest.mark.parametrize("tile", [None, 16, 128])
def test_batched_evaluation_equals_a_per_network_loop(tile):
    f = random_field()
    pts, dirs = random_points(4000)
    net, local = f.locate(pts)
    assert (net < 0).any() and (net >= 0).sum() > 1000  # empty cells and outside points included
    sigma, rgb = f.evaluate(local, dirs, net, tile=tile)
    with torch.no_grad():
        ref_s, ref_c = reference_loop(f, local, dirs, net)
    torch.testing.assert_close(sigma, ref_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, ref_c, atol=1e-5, rtol=1e-5)
    assert (sigma[net < 0] == 0).all() and (rgb[net < 0] == 0).all()
    # the packed single-buffer weights (the renderer's path) give the same numbers
    s2, c2 = f.forward(pts, dirs, packed=f.pack(torch.float32))
    torch.testing.assert_close(s2, ref_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, ref_c, atol=1e-5, rtol=1e-5)


def test_batched_gradients_equal_the_loop_gradients():
    f = random_field()
    pts, dirs = random_points(1500, seed=3)
    net, local = f.locate(pts)
    target = torch.rand(1500, 3)
    s, c = f.evaluate(local, dirs, net)
    (((c - target) ** 2).sum() + s.square().mean()).backward()
    batched = {k: p.grad.clone() for k, p in f.named_parameters()}
    f.zero_grad()
    s, c = reference_loop(f, local, dirs, net)
    (((c - target) ** 2).sum() + s.square().mean()).backward()
    for k, p in f.named_parameters():
        torch.testing.assert_close(batched[k], p.grad, atol=1e-4, rtol=1e-4, msg=k)


def test_grouped_evaluation_equals_the_loop():
    f = random_field()
    m = f.n_networks
    g = torch.Generator().manual_seed(5)
    local = torch.rand(m, 20, 3, generator=g) * 2 - 1
    dirs = F.normalize(torch.randn(m, 20, 3, generator=g), dim=-1)
    sigma, rgb = f.forward_grouped(local, dirs)
    net = torch.arange(m)[:, None].expand(m, 20).reshape(-1)
    with torch.no_grad():
        ref_s, ref_c = reference_loop(f, local.reshape(-1, 3), dirs.reshape(-1, 3), net)
    torch.testing.assert_close(sigma.reshape(-1), ref_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb.reshape(-1, 3), ref_c, atol=1e-5, rtol=1e-5)


def test_tile_layout_puts_one_network_per_tile():
    net = torch.tensor([3, 0, 3, 3, 1, 3, 0, 3, 3])  # counts: net0 2, net1 1, net3 6, net2 none
    lay = tile_layout(net, 4, tile=4)
    # tiles: net0 1, net1 1, net3 2 -> 4 tiles; network 2 gets none
    assert lay.n_tiles == 4 and lay.tile_net.tolist() == [0, 1, 3, 3]
    assert len(set(lay.slot.tolist())) == 9 and int(lay.slot.max()) < 16
    tile_of_point = lay.slot // 4
    assert (lay.tile_net[tile_of_point] == net[lay.order]).all()


def test_tile_layout_with_a_bound_adds_only_empty_tiles():
    """The fused kernel's launch (no host sync): the bound's spare tiles start past the last
    network's points, so a program that takes one finds no point."""
    net = torch.tensor([3, 0, 3, 3, 1, 3, 0, 3, 3, 4])  # 4 = "no network" (slots=False)
    exact = tile_layout(net, 4, tile=4, slots=False)
    bound = tile_upper_bound(net.numel(), 4, 4)
    assert bound == 3 + 4 and exact.n_tiles == 4
    lay = tile_layout(net, 4, tile=4, slots=False, max_tiles=bound)
    assert lay.n_tiles == bound and lay.tile_net[:4].tolist() == exact.tile_net.tolist()
    assert torch.equal(lay.order, exact.order) and torch.equal(lay.first, exact.first)
    for tid in range(4, bound):  # spare tiles: network 3, rows start at or past its end
        m = int(lay.tile_net[tid])
        start = int(lay.first[m]) + (tid - int(lay.tile_first[m])) * 4
        assert m == 3 and start >= int(lay.first[m + 1])
    # the bound holds for any distribution of points over networks
    for n, m, t in ((1, 5, 16), (17, 1, 16), (1000, 671, 16), (5, 100, 128)):
        worst = sum(-(-c // t) for c in [n - min(m, n) + 1] + [1] * (min(m, n) - 1))
        assert tile_upper_bound(n, m, t) >= worst
    with pytest.raises(ValueError):
        tile_layout(net, 4, tile=4, slots=True, max_tiles=bound)


# ------------------------------------------------------------------------------------ ESS
def test_empty_space_distance_is_the_chebyshev_distance():
    occ = torch.zeros(7, 7, 7, dtype=torch.bool)
    occ[3, 3, 3] = True
    d = empty_space_distance(occ, cap=32)
    # Chebyshev distance max(|dx|, |dy|, |dz|) to voxel (3, 3, 3)
    assert d[3, 3, 3] == 0 and d[4, 3, 3] == 1 and d[4, 4, 4] == 1 and d[5, 5, 3] == 2
    assert d[0, 0, 0] == 3 and d[6, 0, 3] == 3 and d[3, 3, 6] == 3
    assert empty_space_distance(occ, cap=2)[0, 0, 0] == 2  # capped
    assert empty_space_distance(torch.zeros(3, 3, 3, dtype=torch.bool), cap=5).eq(5).all()


def camera_batch(width=40, height=30):
    cam = Camera(look_at(torch.tensor([2.5, 1.8, 1.6]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])),
                 width, height, 35.0, 35.0, width / 2, height / 2)
    o, d = camera_rays(cam)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    n = o.shape[0]
    return o, d, torch.full((n,), 0.1), torch.full((n,), 8.0)


def dense_reference(field, grid: OccupancyGrid, o, d, near, far, step):
    """All lattice samples of ``grid.march`` in occupied voxels of ``grid`` (the fine-tuning sampler),
    composited with no ERT."""
    ray_ids, t0, t1 = grid.march(o, d, near, far, step)
    pts = o[ray_ids] + 0.5 * (t0 + t1)[:, None] * d[ray_ids]
    with torch.no_grad():
        sigma, rgb = field(pts, F.normalize(d, dim=-1)[ray_ids])
    out = composite_packed(sigma, rgb, t0, t1, ray_ids, o.shape[0], d.norm(dim=-1), torch.ones(3))
    out["samples"] = torch.bincount(ray_ids, minlength=o.shape[0]).float()
    return out


# Float noise: the renderer and the reference compute the same sample positions with differently
# fused operations (ulp-level differences); sin(2^9 x) of the encoding amplifies them ~1000x.
TOL = dict(atol=1e-3, rtol=0)


def test_ess_does_not_change_the_image_where_the_grid_is_conservative():
    # occupancy = every voxel of every cell that has a network: the field is exactly zero elsewhere,
    # so skipping must reproduce dense sampling of the whole box without any skipping
    f = random_field()
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    ess = EssGrid(AABB, occ)
    o, d, near, far = camera_batch()
    cfg = KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0)
    out = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg)
    everything = OccupancyGrid.from_tensor(AABB, torch.ones_like(occ))
    ref = dense_reference(f, everything, o, d, near, far, 0.03)
    assert ref["acc"].max() > 0.9 and ref["acc"].min() < 0.01  # opaque parts and background
    torch.testing.assert_close(out["rgb"], ref["rgb"], **TOL)
    torch.testing.assert_close(out["acc"], ref["acc"], **TOL)
    torch.testing.assert_close(out["depth"], ref["depth"], atol=1e-2, rtol=0)
    assert out["samples"].sum() < 0.8 * ref["samples"].sum()  # it did skip


@pytest.mark.parametrize("cfg", [
    KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0),
    KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0, initial_jumps=0, jumps_per_pass=0, window=4,
                         samples_per_pass=2, pass_growth=1.0),
    KiloNerfRenderConfig(step_size=0.02, ert_threshold=0.0, initial_jumps=12, jumps_per_pass=6),
    KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0, max_passes=1),
    KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0, max_passes=2, samples_per_pass=3),
])
def test_ess_visits_every_occupied_lattice_sample_of_a_sparse_grid(cfg):
    # a random sparse occupancy grid (the jumps and windows must never step over an occupied
    # lattice sample): without ERT the renderer evaluates exactly the samples of grid.march
    f = random_field(frac=0.8)
    g = torch.Generator().manual_seed(7)
    occ = torch.rand(16, 20, 12, generator=g) < 0.04
    occ &= (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    ess = EssGrid(AABB, occ)
    assert int(ess.distance.max()) >= 3  # long jumps happen
    o, d, near, far = camera_batch()
    out = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg)
    ref = dense_reference(f, ess.grid, o, d, near, far, cfg.step_size)
    assert torch.equal(out["samples"], ref["samples"])
    torch.testing.assert_close(out["rgb"], ref["rgb"], **TOL)
    torch.testing.assert_close(out["acc"], ref["acc"], **TOL)


# ------------------------------------------------------------------------------------ ERT
def test_ert_stops_each_ray_right_after_its_transmittance_drops_below_the_threshold():
    # one sample per pass: a ray must stop exactly after the first sample that takes its
    # transmittance below 0.01 (the dense reference gives the transmittance after every sample)
    f = random_field(density=60.0)
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    ess = EssGrid(AABB, occ)
    o, d, near, far = camera_batch()
    cfg = KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.01, samples_per_pass=1, pass_growth=1.0)
    out = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg)
    ray_ids, t0, t1 = ess.grid.march(o, d, near, far, 0.03)
    pts = o[ray_ids] + 0.5 * (t0 + t1)[:, None] * d[ray_ids]
    with torch.no_grad():
        sigma, _ = f(pts, F.normalize(d, dim=-1)[ray_ids])
    sd = sigma * (t1 - t0) * d.norm(dim=-1)[ray_ids]
    # inclusive per-ray cumulative optical depth
    excl = torch.cumsum(sd.double(), 0) - sd.double()
    counts = torch.bincount(ray_ids, minlength=o.shape[0])
    first = torch.cumsum(counts, 0) - counts
    incl = (excl + sd.double() - excl[first[ray_ids]])
    trans_after = torch.exp(-incl)
    below = trans_after < 0.01
    expected = counts.clone()
    for r in torch.unique(ray_ids[below]).tolist():  # test-side bookkeeping over a few hundred rays
        k = int(torch.nonzero(below & (ray_ids == r))[0]) - int(first[r])
        expected[r] = k + 1
    assert (expected < counts).sum() > 100  # many rays terminate early
    # rays whose transmittance lands within float noise of the threshold may go either way
    near_thr = torch.zeros(o.shape[0], dtype=torch.bool).index_put(
        (ray_ids,), (trans_after / 0.01 - 1).abs() < 1e-4, accumulate=True)
    assert near_thr.sum() < 5
    assert torch.equal(out["samples"].long()[~near_thr], expected[~near_thr])
    assert (out["trans"][expected < counts] < 0.01).all()


def test_ert_changes_colour_and_opacity_by_less_than_the_threshold():
    f = random_field(density=60.0)
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    ess = EssGrid(AABB, occ)
    o, d, near, far = camera_batch()
    full = render_passes(f, ess, o, d, near, far, torch.ones(3), KiloNerfRenderConfig(step_size=0.03, ert_threshold=0))
    ert = render_passes(f, ess, o, d, near, far, torch.ones(3), KiloNerfRenderConfig(step_size=0.03))
    stopped = ert["samples"] < full["samples"]
    assert stopped.sum() > 100 and ert["samples"].sum() < 0.8 * full["samples"].sum()
    assert (ert["trans"][stopped] < 0.01).all()
    # what ERT drops is at most the remaining transmittance (< 0.01) times a colour difference <= 1
    assert (ert["rgb"] - full["rgb"]).abs().max() < 0.01
    assert (ert["acc"] - full["acc"]).abs().max() < 0.01
    assert torch.equal(ert["rgb"][~stopped], full["rgb"][~stopped])


# -------------------------------------------------------------------------------- backend
def backend_for(field: KiloNerfGrid, occ: torch.Tensor, cfg: KiloNerfRenderConfig) -> KiloNerfBackend:
    b = KiloNerfBackend("cpu")
    state = {f"field.{k}": v for k, v in field.state_dict().items()}
    state["ess.occupied"] = occ.to(torch.uint8)
    b.load_state_dict(state, {"field": field.config.to_dict(), "render": cfg.to_dict()})
    return b


def test_backend_renders_in_chunks_reports_samples_and_aborts():
    f = random_field()
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    b = backend_for(f, occ, KiloNerfRenderConfig(step_size=0.03))
    cam = Camera(look_at(torch.tensor([2.5, 1.8, 1.6]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])),
                 32, 24, 28.0, 28.0, 16.0, 12.0)
    req = RenderRequest.from_camera(cam, 0.1, 8.0, outputs=frozenset({"rgb", "depth", "acc"}))
    whole = b.render(req)
    b.chunk_override = 100
    chunked = b.render(req)
    assert whole.rgb.shape == (24, 32, 3) and whole.depth.shape == (24, 32) and whole.acc.shape == (24, 32)
    torch.testing.assert_close(chunked.rgb, whole.rgb, atol=1e-5, rtol=0)
    assert torch.equal(b.render(req).rgb, chunked.rgb)  # deterministic
    assert 0 < whole.samples_per_ray < 64 and whole.flops_per_ray == pytest.approx(whole.samples_per_ray * 12160)
    assert whole.rgb.min() >= 0 and whole.rgb.max() <= 1
    with pytest.raises(RenderAborted):
        b.render(req, should_abort=lambda: True)


def test_weights_that_disagree_with_their_tables_are_refused_before_allocation():
    # without the check the crafted table would make the backend allocate a million networks (~22 GB)
    from models.backends.base import BackendUnavailable

    f = random_field()
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    good = {f"field.{k}": v for k, v in f.state_dict().items()}
    good["ess.occupied"] = occ.to(torch.uint8)
    config = {"field": f.config.to_dict(), "render": KiloNerfRenderConfig().to_dict()}
    big = dict(good)
    big["field.cell_to_net"] = good["field.cell_to_net"].clone()
    big["field.cell_to_net"].view(-1)[0] = 10**6  # a crafted entry: a million networks
    flat = dict(good, **{"ess.occupied": occ.reshape(-1).to(torch.uint8)})
    wrong = dict(good, **{"field.b2": good["field.b2"][:, :-1]})
    for state, match in ((big, "names networks"), (flat, "3-D grid"), (wrong, "field.b2: expected shape")):
        with pytest.raises(BackendUnavailable, match=match):
            KiloNerfBackend("cpu").load_state_dict(state, config)


def test_a_float16_copy_of_the_weights_renders_like_the_original():
    # what ``main.py export`` stores: every float tensor as float16; the box comes from the manifest
    f = random_field()
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    cfg = KiloNerfRenderConfig(step_size=0.03)
    state = {f"field.{k}": v for k, v in f.state_dict().items()}
    state["ess.occupied"] = occ.to(torch.uint8)
    config = {"field": f.config.to_dict(), "render": cfg.to_dict(), "aabb": f.aabb.tolist()}
    full, half = KiloNerfBackend("cpu"), KiloNerfBackend("cpu")
    full.load_state_dict(state, config)
    half.load_state_dict({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, config)
    assert torch.equal(half.field.aabb, f.aabb)
    cam = Camera(look_at(torch.tensor([2.5, 1.8, 1.6]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])),
                 32, 24, 28.0, 28.0, 16.0, 12.0)
    req = RenderRequest.from_camera(cam, 0.1, 8.0)
    a, b = full.render(req).rgb, half.render(req).rgb
    assert -10 * math.log10(float(((a - b) ** 2).mean())) > 35


def test_backend_is_registered_after_nerf():
    from models.backends.registry import BACKENDS

    names = list(BACKENDS)
    assert names.index("kilonerf") == names.index("nerf") + 1
    assert BACKENDS["kilonerf"].label == "KiloNeRF"


def test_presets_are_data_with_documented_steps():
    from models.training.distill_kilonerf import PRESETS, KiloNerfConfig

    assert set(PRESETS) == {"tiny", "quick", "standard", "long", "paper"}
    assert all(isinstance(p, KiloNerfConfig) for p in PRESETS.values())
    paper = PRESETS["paper"]
    assert round(paper.steps * paper.distill_fraction) == 150_000 and paper.occupancy_threshold == 10.0
    assert PRESETS["standard"].time_budget_s <= 9 * 60
    assert math.isclose(KiloNerfConfig().l2_weight, 1e-6)


# ------------------------------------------------------------------------------- fused kernel
def uneven_points(field: KiloNerfGrid, n: int, seed: int = 2, device="cpu"):
    """(local, dirs, net) for ``n`` points over many networks with very uneven counts: network 0
    gets about a third, networks 1..4 one point each, every third network none, some points -1."""
    g = torch.Generator().manual_seed(seed)
    m = field.n_networks
    busy = torch.tensor([k for k in range(5, m) if k % 3])  # every third network stays empty
    net = busy[(torch.rand(n, generator=g) ** 2 * len(busy)).long()]  # skewed towards the first
    net[torch.rand(n, generator=g) < 0.3] = 0
    net[torch.rand(n, generator=g) < 0.05] = -1
    net[:4] = torch.arange(1, 5)  # four networks with exactly one point
    local = torch.rand(n, 3, generator=g) * 2 - 1
    dirs = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return local.to(device), dirs.to(device), net.to(device)


def fused_errors(fused, field, local, dirs, net, **kw) -> tuple[float, float]:
    """Max error of the fused kernel vs the fp32 batched path: sigma relative to max(1, sigma), rgb absolute."""
    s, c = fused(local, dirs, net, **kw)
    with torch.no_grad():
        rs, rc = field.evaluate(local, dirs, net)
    return float(((s - rs).abs() / rs.abs().clamp_min(1.0)).max()), float((c - rc).abs().max())


FUSED_CHECK = """
import os, sys, torch
assert os.environ["TRITON_INTERPRET"] == "1"
sys.path.insert(0, "tests")
from test_kilonerf import AABB, camera_batch, fused_errors, random_field, uneven_points
from models.backends.kilonerf import KiloNerfRenderConfig, render_passes
from models.occupancy import EssGrid
from models.fields.kilonerf_fused import FusedKiloNerf
f = random_field(frac=0.8)
fused = FusedKiloNerf(f)
local, dirs, net = uneven_points(f, 700)
counts = torch.bincount(net[net >= 0], minlength=f.n_networks)
assert f.n_networks > 40 and (counts == 0).sum() > 10 and (counts == 1).sum() >= 4 and counts.max() > 150
for tile in (16, 128):
    es, ec = fused_errors(fused, f, local, dirs, net, tile=tile)
    assert es < 1e-2 and ec < 1e-2, (tile, es, ec)
v = net >= 0
es, ec = fused_errors(fused, f, local[v], dirs[v], net[v], all_valid=True)
assert es < 1e-2 and ec < 1e-2, ("all_valid", es, ec)
s, c = fused(local[:0], dirs[:0], net[:0])
assert s.shape == (0,) and c.shape == (0, 3)
# a small frame through the renderer's passes: the fused kernel in place of the torch path
occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
ess = EssGrid(AABB, occ)
o, d, near, far = camera_batch(12, 9)
cfg = KiloNerfRenderConfig(step_size=0.05)
a = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg, fused)
b = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg)
assert torch.equal(a["samples"], b["samples"]) and b["acc"].max() > 0.5
err = float((a["rgb"] - b["rgb"]).abs().max())
assert err < 1e-2, err
# the Triton marcher against the torch passes (both with the fused kernel): the same samples, the
# same image up to float rounding, over several passes, with a final pass, and without ERT
from models.backends.kilonerf import marcher_disagreement, pass_sizes
from models.backends.kilonerf_march import TritonMarcher
ess.set_networks(f.cell_to_net)
marcher = TritonMarcher(ess, f.n_networks)
o, d, near, far = camera_batch(6, 4)  # 24 rays: 2 to 5 passes, 24 to 102 samples per ray below
for cfg in (KiloNerfRenderConfig(step_size=0.02), KiloNerfRenderConfig(step_size=0.02, max_passes=2),
            KiloNerfRenderConfig(step_size=0.03, ert_threshold=0.0, samples_per_pass=4)):
    a = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg, fused, marcher=marcher)
    b = render_passes(f, ess, o, d, near, far, torch.ones(3), cfg, fused)
    assert int(a["passes"]) == int(b["passes"]) >= 2, (cfg, a["passes"], b["passes"])
    assert torch.equal(a["samples"], b["samples"]) and a["samples"].mean() > 5, cfg
    for k in ("rgb", "depth", "acc", "trans"):
        err = float((a[k] - b[k]).abs().max())
        assert err < 5e-3 * (1 + float(b[k].abs().max())), (cfg, k, err)
marcher.warm_up(pass_sizes(KiloNerfRenderConfig()))
err, frac = marcher_disagreement(f, ess, KiloNerfRenderConfig(step_size=0.05), fused, marcher, n_rays=100)
assert err < 2e-3 and frac <= 0.02, (err, frac)  # at most 2 of the 100 rays differ (as 2 of 300 before)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (GPU machines have it)")
def test_fused_kernel_matches_the_batched_path_in_the_triton_interpreter():
    # a subprocess: TRITON_INTERPRET must be set before triton is imported (CPU emulation, fp16 dots)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", FUSED_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_pass_sizes_cover_every_distinct_pass():
    cfg = KiloNerfRenderConfig()  # 8 samples in the first pass, doubling up to 64, window >= 32
    assert pass_sizes(cfg) == [(4, 32, 8), (1, 32, 16), (1, 64, 32), (1, 128, 64)]
    assert pass_sizes(KiloNerfRenderConfig(pass_growth=1.0, initial_jumps=0, jumps_per_pass=0)) == [(0, 32, 8)]


def test_backend_accel_choices_and_cpu_path():
    with pytest.raises(ValueError):
        KiloNerfBackend("cpu", accel="cuda-graphs")
    f = random_field()
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    b = backend_for(f, occ, KiloNerfRenderConfig(step_size=0.03))
    assert b.accel == "auto" and b.fused() is None and b.marcher() is None
    assert b.active_path() == "torch-fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_kernel_matches_the_torch_path_on_cuda():
    f = random_field(frac=0.8).cuda()
    from models.fields.kilonerf_fused import FusedKiloNerf

    fused = FusedKiloNerf(f)
    local, dirs, net = uneven_points(f, 20000, device="cuda")
    for tile in (None, 16, 32, 64, 128):
        es, ec = fused_errors(fused, f, local, dirs, net, tile=tile)
        assert es < 1e-2 and ec < 1e-2, (tile, es, ec)
    # a rendered frame: fused vs the torch fp16 path vs fp32
    occ = (f.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    state = {f"field.{k}": v for k, v in f.state_dict().items()}
    state["ess.occupied"] = occ.to(torch.uint8)
    config = {"field": f.config.to_dict(), "render": KiloNerfRenderConfig(step_size=0.01).to_dict()}
    cam = Camera(look_at(torch.tensor([2.5, 1.8, 1.6]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])),
                 200, 150, 175.0, 175.0, 100.0, 75.0)
    req = RenderRequest.from_camera(cam, 0.1, 8.0)
    frames, samples = {}, {}
    for accel, path in (("fused", "fused"), ("fused-net", "fused-net"), ("torch", "torch-fp16")):
        b = KiloNerfBackend("cuda", accel=accel)
        b.load_state_dict(state, config)
        res = b.render(req)
        frames[accel], samples[accel] = res.rgb, res.samples_per_ray
        assert b.active_path() == path, b.accel_note
    frames["fp32"] = b.render(RenderRequest(**{**req.__dict__, "precision": "fp32"})).rgb

    def psnr(a, b):
        return -10 * math.log10(max(float(((a - b) ** 2).mean()), 1e-12))

    # the Triton marcher takes the torch passes' samples (ulp-level rounding aside)
    assert abs(samples["fused"] - samples["fused-net"]) < 1e-3 * samples["fused-net"]
    assert psnr(frames["fused"], frames["fused-net"]) > 50
    assert psnr(frames["fused"], frames["torch"]) > 45
    assert psnr(frames["fused"], frames["fp32"]) > 45
