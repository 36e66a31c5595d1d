"""Golden tests for the volume renderer (values worked out by hand in the comments)."""

import math

import torch

from models.encoding import encoded_size, positional_encoding
from models.occupancy import OccupancyGrid
from models.rendering import (
    composite,
    composite_packed,
    packed_exclusive_cumsum,
    sample_pdf,
    stratified_samples,
    weights_from_alpha,
)


def test_transmittance_and_weights_golden():
    # sigma = [1, 2, 50] at t = [0, 1, 2], |d| = 1: deltas = [1, 1, 1e10]
    # alpha = [1 - e^-1, 1 - e^-2, 1]; T = [1, e^-1, e^-3]
    # w = [0.6321206, e^-1 (1 - e^-2) = 0.3180924, e^-3 = 0.0497871], sum = 1
    # depth = 0 * w0 + 1 * w1 + 2 * w2 = 0.4176665
    sigma = torch.tensor([[1.0, 2.0, 50.0]])
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    t = torch.tensor([[0.0, 1.0, 2.0]])
    out = composite(sigma, rgb, t, torch.tensor([[0.0, 0.0, -1.0]]), background=torch.ones(3))
    w = torch.tensor([1 - math.exp(-1), math.exp(-1) * (1 - math.exp(-2)), math.exp(-3)])
    torch.testing.assert_close(out["weights"][0], w)
    torch.testing.assert_close(out["acc"], torch.tensor([1.0]))
    torch.testing.assert_close(out["depth"], torch.tensor([0.4176665]))
    torch.testing.assert_close(out["rgb"][0], w)  # colour i contributes w_i to channel i, no background left


def test_background_fills_transparent_rays():
    # empty ray: acc = 0, colour = background
    out = composite(torch.zeros(1, 4), torch.rand(1, 4, 3), torch.linspace(2, 6, 4)[None], torch.tensor([[0, 0, -1.0]]),
                    torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(out["rgb"][0], torch.tensor([0.2, 0.4, 0.6]))
    assert float(out["acc"]) == 0.0


def test_delta_scales_with_direction_norm():
    # The same density over the same t-interval is twice as opaque along a ray twice as long:
    # alpha = 1 - exp(-1 * 1 * 2) = 0.8646647.
    out = composite(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2, 3), torch.tensor([[0.0, 1.0]]),
                    torch.tensor([[0.0, 0.0, -2.0]]))
    assert math.isclose(float(out["acc"]), 1 - math.exp(-2), rel_tol=1e-6)


def test_weights_from_alpha_saturates_without_nan():
    w, tr = weights_from_alpha(torch.tensor([[1.0, 1.0, 0.5]]))
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-9, rtol=0)
    assert torch.isfinite(tr).all()


def test_stratified_samples():
    t = stratified_samples(torch.tensor([2.0]), torch.tensor([6.0]), 5, perturb=False)
    torch.testing.assert_close(t, torch.tensor([[2.0, 3.0, 4.0, 5.0, 6.0]]))
    g = torch.Generator().manual_seed(0)
    tj = stratified_samples(torch.full((100,), 2.0), torch.full((100,), 6.0), 5, perturb=True, generator=g)
    # each jittered sample stays in its bin: bins are [2, 2.5], [2.5, 3.5], ..., [5.5, 6]
    lo = torch.tensor([2.0, 2.5, 3.5, 4.5, 5.5])
    hi = torch.tensor([2.5, 3.5, 4.5, 5.5, 6.0])
    assert ((tj >= lo) & (tj <= hi)).all()
    assert (tj[:, 1:] >= tj[:, :-1]).all()


def test_sample_pdf_golden():
    # bins [0, 1, 2], weights [1, 3] -> pdf ~ [0.25, 0.75], cdf ~ [0, 0.25, 1].
    # Deterministic u = [0, 0.5, 1]: u = 0.5 falls in bin 2 at fraction (0.5 - 0.25) / 0.75 = 1/3
    # -> 1.3333; u = 0 -> 0; u = 1 -> 2.
    s = sample_pdf(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 3.0]]), 3, deterministic=True)
    torch.testing.assert_close(s, torch.tensor([[0.0, 4.0 / 3.0, 2.0]]), atol=1e-4, rtol=0)
    # u = 0.125 lands halfway through the first bin -> 0.5
    s = sample_pdf(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 3.0]]), 9, deterministic=True)
    assert abs(float(s[0, 1]) - 0.5) < 1e-4


def test_sample_pdf_random_follows_weights():
    g = torch.Generator().manual_seed(0)
    s = sample_pdf(torch.tensor([[0.0, 1.0, 2.0]]).expand(1, 3), torch.tensor([[1.0, 3.0]]), 20000, False, g)
    frac_second = float((s > 1.0).float().mean())
    assert abs(frac_second - 0.75) < 0.02


def test_packed_cumsum_golden():
    # values [1, 2, 3, 4] on rays [0, 0, 1, 1] -> exclusive per-ray sums [0, 1, 0, 3]
    out = packed_exclusive_cumsum(torch.tensor([1.0, 2, 3, 4]), torch.tensor([0, 0, 1, 1]), 2)
    torch.testing.assert_close(out, torch.tensor([0.0, 1, 0, 3]))
    # a ray with no samples in the middle
    out = packed_exclusive_cumsum(torch.tensor([1.0, 2, 3]), torch.tensor([0, 2, 2]), 3)
    torch.testing.assert_close(out, torch.tensor([0.0, 0, 2]))


def test_packed_equals_dense():
    g = torch.Generator().manual_seed(0)
    r, s = 7, 9
    sigma = torch.rand(r, s, generator=g) * 3
    rgb = torch.rand(r, s, 3, generator=g)
    t = torch.sort(torch.rand(r, s, generator=g) * 4 + 2, -1).values
    d = torch.randn(r, 3, generator=g)
    bg = torch.tensor([1.0, 0.5, 0.0])
    dense = composite(sigma, rgb, t, d, bg)
    ends = torch.cat([t[:, 1:], t[:, -1:] + 1e10], -1)
    ray_ids = torch.arange(r).repeat_interleave(s)
    packed = composite_packed(sigma.reshape(-1), rgb.reshape(-1, 3), t.reshape(-1), ends.reshape(-1), ray_ids, r,
                              d.norm(dim=-1), bg)
    torch.testing.assert_close(packed["rgb"], dense["rgb"])
    torch.testing.assert_close(packed["acc"], dense["acc"])
    torch.testing.assert_close(packed["weights"], dense["weights"].reshape(-1))


def test_packed_two_passes_equal_one():
    # KiloNeRF marches in passes: compositing samples 0..3 then 4..7 with the carried
    # transmittance must equal compositing 0..7 at once.
    g = torch.Generator().manual_seed(3)
    sigma, rgb = torch.rand(8, generator=g) * 4, torch.rand(8, 3, generator=g)
    t0 = torch.arange(8.0) * 0.1
    ids = torch.zeros(8, dtype=torch.long)
    dn = torch.ones(1)
    full = composite_packed(sigma, rgb, t0, t0 + 0.1, ids, 1, dn)
    a = composite_packed(sigma[:4], rgb[:4], t0[:4], t0[:4] + 0.1, ids[:4], 1, dn)
    b = composite_packed(sigma[4:], rgb[4:], t0[4:], t0[4:] + 0.1, ids[4:], 1, dn, log_trans_init=a["log_trans"])
    torch.testing.assert_close(a["rgb"] + b["rgb"], full["rgb"])
    torch.testing.assert_close(a["acc"] + b["acc"], full["acc"])


def test_positional_encoding_golden():
    # x = 0.5, L = 2: (0.5, sin 0.5, cos 0.5, sin 1, cos 1)
    e = positional_encoding(torch.tensor([[0.5]]), 2)
    ref = torch.tensor([[0.5, math.sin(0.5), math.cos(0.5), math.sin(1.0), math.cos(1.0)]])
    torch.testing.assert_close(e, ref)
    assert encoded_size(3, 10) == 63 and encoded_size(3, 4) == 27
    assert positional_encoding(torch.zeros(5, 3), 10).shape == (5, 63)


def test_occupancy_march_skips_empty_voxels():
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 4)
    grid.occupied[:] = False
    grid.occupied[2, :, :] = True  # x in [0, 0.5)
    o = torch.tensor([[-3.0, 0.1, 0.1]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    ids, ts, te = grid.march(o, d, torch.tensor([0.0]), torch.tensor([10.0]), 0.05)
    x = o[0, 0] + 0.5 * (ts + te)
    assert ids.numel() == 10  # 0.5 / 0.05 samples inside the occupied slab
    assert (x >= 0).all() and (x < 0.5).all()


def test_occupancy_from_density_any_subsample():
    grid = OccupancyGrid(torch.tensor([[0.0] * 3, [1.0] * 3]), 2)
    # density > 10 only near the corner (1, 1, 1): only voxel (1, 1, 1) is occupied
    grid.build_from_density(lambda p: torch.where((p > 0.8).all(-1), 20.0, 0.0), threshold=10.0)
    assert int(grid.occupied.sum()) == 1 and bool(grid.occupied[1, 1, 1])


def test_nerf_mlp_padded_inputs_equal_the_plain_network():
    """The CUDA layout (encodings and weights padded to multiples of 8 columns, zeros after the
    encoding's columns, also at the skip) computes the same network, gradients included."""
    from models.fields.nerf_mlp import NerfMLP

    torch.manual_seed(0)
    net = NerfMLP()
    x = torch.rand(64, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    outs, grads = [], []
    for pad in (False, True):
        net.pad_inputs = pad
        net.zero_grad(set_to_none=True)
        sigma, rgb = net(x, d)
        (sigma.sum() + rgb.sum()).backward()
        outs.append(torch.cat([sigma[:, None], rgb], 1))
        grads.append([p.grad.clone() for p in net.parameters()])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)
