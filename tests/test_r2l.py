"""R2L: ray encoding (golden values), network counts, feature planes, hard-example pool, pseudo poses,
online teacher rays, backend.

The CPU end-to-end distillation test lives in test_r2l_distill.py.
"""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.backends.base import RenderAborted, RenderRequest
from models.backends.r2l import FusedR2L, R2LBackend
from models.cameras import Camera, look_at
from models.fields.feature_planes import FeaturePlanes
from models.fields.r2l_mlp import VARIANTS, R2LMLP, R2LMLPConfig, box_segments, encode_rays, ray_points
from models.training.distill_r2l import PRESETS, HardExamplePool
from models.training.pseudo_rays import (
    OnlineRays,
    RandomViewRays,
    fresh_rays_for_budget,
    sample_pseudo_poses,
    scene_centre,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- encoding
def test_encoding_of_a_two_point_ray_written_out():
    # K = 2 points, L = 1 frequency, ray o = (0, 0, 0), d = (1, 0, 0), near 1, far 2:
    # t = (1, 2) (first sample at near, last at far), points p0 = (1, 0, 0), p1 = (2, 0, 0);
    # gamma = [p (6), sin(p) (6), cos(p) (6)] with sin(0) = 0, cos(0) = 1.
    cfg = R2LMLPConfig(width=8, depth=2, n_points=2, pos_freqs=1)
    o, d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    enc = encode_rays(o, d, torch.tensor([1.0]), torch.tensor([2.0]), cfg)
    s1, s2, c1, c2 = math.sin(1), math.sin(2), math.cos(1), math.cos(2)
    expected = [1, 0, 0, 2, 0, 0, s1, 0, 0, s2, 0, 0, c1, 1, 1, c2, 1, 1]
    assert enc.shape == (1, 18) and cfg.input_dim == 18
    torch.testing.assert_close(enc[0], torch.tensor(expected, dtype=torch.float32))


def test_encoding_of_a_hand_made_ray_paper_size():
    # o = (1, 2, 3), d = (0, 0, -1), near 2, far 5, K = 16: t_k = 2 + 0.2 k (evenly spaced at test
    # time), p_k = (1, 2, 1 - 0.2 k): p_0 = (1, 2, 1), p_1 = (1, 2, 0.8), p_15 = (1, 2, -2).
    # Layout: [48 raw coords (x0 y0 z0 x1 ...)], then per frequency f = 0..9: sin(2^f p) (48),
    # cos(2^f p) (48), so sin of coordinate j at frequency f sits at 48 + 96 f + j, its cos 48 further.
    cfg = VARIANTS["W256D88"]
    o, d = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    enc = encode_rays(o, d, torch.tensor([2.0]), torch.tensor([5.0]), cfg)
    assert enc.shape == (1, 1008) and cfg.input_dim == 16 * 3 * 21 == 1008
    e = enc[0].double()
    golden = {
        0: 1.0, 1: 2.0, 2: 1.0,  # p_0
        5: 0.8,  # z of p_1
        47: -2.0,  # z of p_15
        48 + 5: 0.7173560908995228,  # sin(0.8), f = 0
        96 + 5: 0.6967067093471654,  # cos(0.8), f = 0
        48 + 96 * 9 + 0: 0.07951849401287635,  # sin(2^9 * 1) = sin(512), f = 9, x of p_0
        48 + 96 * 9 + 48: -0.996833390848202,  # cos(512)
        48 + 96 * 9 + 47: 0.15853338004399595,  # sin(512 * -2) = sin(-1024), z of p_15
        1007: 0.9873536182198484,  # cos(-1024), the last feature
    }
    for i, v in golden.items():
        # float32 arguments: 512 * x is exact here, sin/cos of |x| <= 1024 to ~1e-4
        assert abs(float(e[i]) - v) < 2e-4, (i, float(e[i]), v)


def test_stratified_points_stay_in_their_bins_and_test_points_are_even():
    g = torch.Generator().manual_seed(0)
    o, d = torch.zeros(500, 3), torch.tensor([[0.0, 0.0, -1.0]]).expand(500, 3)
    near, far = torch.full((500,), 2.0), torch.full((500,), 6.0)
    t = -ray_points(o, d, near, far, 16, perturb=True, generator=g)[..., 2]  # (R, 16) depths
    edges = torch.linspace(2, 6, 16)
    mids = 0.5 * (edges[1:] + edges[:-1])
    lower, upper = torch.cat([edges[:1], mids]), torch.cat([mids, edges[-1:]])
    assert ((t >= lower - 1e-6) & (t <= upper + 1e-6)).all()
    assert (t[:, 1:] >= t[:, :-1]).all() and t.std(0).min() > 0.01  # jittered, still sorted
    t_test = -ray_points(o[:1], d[:1], near[:1], far[:1], 16, perturb=False)[0, :, 2]
    torch.testing.assert_close(t_test, edges)


# ---------------------------------------------------------------------------------- counts
def test_w256d88_matches_the_paper_counts():
    net = R2LMLP(VARIANTS["W256D88"])
    # 1008*256+256 + 43 blocks * 2 * (256*256+256) + 256*3+3 = 5,917,187 parameters (paper: 5.92M);
    # 2 * (1008*256 + 86*256*256 + 256*3) = 11,789,824 FLOPs per ray (paper: 11.79 MFLOPs).
    assert net.parameter_count() == 5_917_187
    assert net.flops_per_ray() == 11_789_824
    assert abs(net.parameter_count() / 5.92e6 - 1) < 0.01 and abs(net.flops_per_ray() / 11.79e6 - 1) < 0.01
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 88


@pytest.mark.parametrize("name", ["W181D88", "W256D44", "W363D22"])
def test_six_mflop_variants(name):
    assert abs(R2LMLP(VARIANTS[name]).flops_per_ray() / 6.0e6 - 1) < 0.01


def test_config_validation_and_names():
    assert R2LMLPConfig.from_name("W181D88") == R2LMLPConfig(181, 88)
    assert R2LMLPConfig.from_name("W96D10").n_blocks == 4
    with pytest.raises(ValueError):
        R2LMLPConfig(256, 87)
    with pytest.raises(ValueError):
        R2LMLPConfig.from_name("big")
    assert set(PRESETS) == {"tiny", "quick", "standard", "long", "paper"}
    assert PRESETS["standard"].mlp.name == "P8x4-512-K128-W256D12-M128" and PRESETS["standard"].time_budget_s <= 900
    assert PRESETS["paper"].mlp.name == "W256D88" and PRESETS["paper"].steps == 1_600_000
    assert PRESETS["paper"].pseudo_source == "pool" and PRESETS["standard"].pseudo_source == "online"
    for name, cfg in VARIANTS.items():
        assert R2LMLPConfig.from_name(name) == cfg and R2LMLPConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.name == name


# ------------------------------------------------------------------------- feature planes
def test_feature_planes_golden_lookup():
    # one level of 2 x 2 texels, one channel; texel centres at -0.5 and +0.5 (align_corners=False)
    fp = FeaturePlanes(1, (2,))
    with torch.no_grad():
        lvl = fp.level(0)  # (3, R, R, C): plane, row (v), column (u), channel
        lvl[0, :, :, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # XY plane: u = x, v = y
        lvl[1] = 1.0  # XZ
        lvl[2] = 1.0  # YZ
    x = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.3], [1.5, 0.0, 0.0]])
    got = fp(x)[:, 0]
    # texel (row 0, col 0) = 1, (0, 1) = 2; the centre averages the four texels: 2.5;
    # (row 1, col 1) = 4; outside the box everything is zero
    torch.testing.assert_close(got, torch.tensor([1.0, 2.0, 2.5, 4.0, 0.0]))


def test_feature_planes_multiply_the_three_planes():
    torch.manual_seed(0)
    fp = FeaturePlanes(4, (3, 5))
    x = torch.rand(50, 3) * 2 - 1
    f = fp(x)
    assert f.shape == (50, 8)
    with torch.no_grad():
        fp.level(1)[2] *= 2.0  # doubling the YZ plane of level 1 doubles level 1's features only
    g = fp(x)
    torch.testing.assert_close(g[:, 4:], 2 * f[:, 4:])
    torch.testing.assert_close(g[:, :4], f[:, :4])


def test_box_segments_clip_rays_to_the_box():
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    o = torch.tensor([[0.0, 0.0, 4.0], [0.0, 3.0, 4.0], [0.0, 0.0, 0.5]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    t0, t1 = box_segments(o, d, torch.full((3,), 2.0), torch.full((3,), 6.0), box)
    # through the box from z = 1 to z = -1 (t = 3 .. 5); a miss collapses to one point (its slab
    # entry t = 3, outside the box); a ray whose box part lies before near (t < 1.5) collapses at near
    torch.testing.assert_close(t0, torch.tensor([3.0, 3.0, 2.0]))
    torch.testing.assert_close(t1, torch.tensor([5.0, 3.0, 2.0]))


def test_planes_network_points_lie_in_the_box_and_shapes_match():
    cfg = R2LMLPConfig(32, 4, n_points=5, encoding="planes", plane_channels=4, plane_resolutions=(4, 8), ray_freqs=2)
    assert cfg.input_dim == 5 * 8 + 6 * 5 and cfg.name == "P4x2-8-K5-W32D4"
    net = R2LMLP(cfg)
    net.set_box(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    o = torch.tensor([[0.0, 0.0, 4.0]]).repeat(7, 1)
    d = torch.randn(7, 3) * 0.1 + torch.tensor([0.0, 0.0, -1.0])
    enc = net.encode(o, d, torch.full((7,), 2.0), torch.full((7,), 6.0), perturb=True)
    assert enc.shape == (7, cfg.input_dim) and torch.isfinite(enc).all()
    assert (enc[:, :40] > 0).all()  # every point inside the box has a (positive) feature
    out = net(enc)
    assert out.shape == (7, 3) and (out > 0).all() and (out < 1).all()
    assert set(p.data_ptr() for p in net.grid_parameters()).isdisjoint(p.data_ptr() for p in net.mlp_parameters())
    assert sum(p.numel() for p in net.grid_parameters()) == 3 * 4 * (16 + 64)


def test_half_mlp_keeps_planes_and_box_in_float32():
    net = R2LMLP(VARIANTS["P8x4-128-K32-W128D8"])
    half = net.half_mlp()
    assert half.head.weight.dtype == torch.float16 and half.blocks[0].fc1.weight.dtype == torch.float16
    assert half.planes.table.dtype == torch.float32 and half.box.dtype == torch.float32
    assert net.head.weight.dtype == torch.float32  # the original is untouched


def test_residual_stack_training_function_matches_the_modules():
    from models.fields.r2l_mlp import _ResidualStackFn

    torch.manual_seed(0)
    net = R2LMLP(R2LMLPConfig(8, 8, n_points=2, pos_freqs=1)).double()
    w1 = torch.stack([b.fc1.weight for b in net.blocks]).detach().requires_grad_()
    b1 = torch.stack([b.fc1.bias for b in net.blocks]).detach().requires_grad_()
    w2 = torch.stack([b.fc2.weight for b in net.blocks]).detach().requires_grad_()
    b2 = torch.stack([b.fc2.bias for b in net.blocks]).detach().requires_grad_()
    x = torch.randn(20, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ResidualStackFn.apply, (x, w1, b1, w2, b2))
    net = R2LMLP(R2LMLPConfig(64, 10, n_points=4, pos_freqs=2))
    enc = torch.randn(300, net.config.input_dim)
    g = torch.randn(300, 3)
    net(enc).backward(g)  # the training path (gradients are recorded)
    fast = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    x = torch.relu(net.head(enc))
    for blk in net.blocks:  # the plain modules
        x = blk(x)
    torch.sigmoid(net.tail(x)).backward(g)
    for a, ref in zip(fast, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(net(enc), torch.sigmoid(net.tail(x)))


def test_residual_block_is_x_plus_block():
    torch.manual_seed(0)
    net = R2LMLP(R2LMLPConfig(16, 4, n_points=2, pos_freqs=1))
    x = torch.randn(5, 16)
    b = net.blocks[0]
    torch.testing.assert_close(b(x), x + b.fc2(torch.relu(b.fc1(x))))
    out = net(torch.randn(5, net.config.input_dim))
    assert out.shape == (5, 3) and (out > 0).all() and (out < 1).all()


# ------------------------------------------------------------------------------ hard pool
def test_hard_pool_keeps_the_highest_error_rows():
    pool = HardExamplePool(capacity=4, width=2, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert pool.draw(2)[0].numel() == 0  # nothing is drawn before the pool is full
    rows = torch.tensor([[0.0, 0], [1, 1], [2, 2], [3, 3], [4, 4]])
    pool.push(rows, errors=torch.tensor([0.1, 0.9, 0.2, 0.8, 0.0]), k=2)  # keeps rows 1 and 3
    assert pool.size == 2 and not pool.full
    assert sorted(pool.rows[:2, 0].tolist()) == [1.0, 3.0]
    pool.push(rows, errors=torch.tensor([0.5, 0.0, 0.0, 0.0, 0.7]), k=3)  # rows 4, 0 (+ one of the ties)
    assert pool.full and pool.size == 4  # only 2 of the 3 fitted: the two highest, in error order
    assert pool.rows[:, 0].tolist()[2:] == [4.0, 0.0]

    before = pool.rows.clone()
    slots, drawn = pool.draw(2)
    assert slots.unique().numel() == 2
    torch.testing.assert_close(drawn, before[slots])
    new = torch.tensor([[10.0, 10], [11, 11], [12, 12]])
    pool.push(new, errors=torch.tensor([0.3, 0.1, 0.6]), k=2, replace=slots)  # rows 12 and 10 ...
    torch.testing.assert_close(pool.rows[slots], torch.tensor([[12.0, 12], [10, 10]]))  # ... into the drawn slots
    untouched = torch.ones(4, dtype=torch.bool)
    untouched[slots] = False
    torch.testing.assert_close(pool.rows[untouched], before[untouched])


def test_hard_pool_disabled():
    pool = HardExamplePool(0, 9, torch.device("cpu"))
    pool.push(torch.ones(3, 9), torch.ones(3), 2)
    assert not pool.full and pool.draw(5)[0].numel() == 0


# ------------------------------------------------------------------------ online teacher rays
class _CountingTeacher:
    """A stand-in teacher: colour = |direction| components, counting the rays it labels."""

    def __init__(self):
        self.rays, self.seconds = 0, 0.0

    def __call__(self, o, d):
        self.rays += o.shape[0]
        return (d / d.norm(dim=-1, keepdim=True)).abs()


def _views(n_poses=64):
    from models.data import Split

    c2w, _ = _blender_like_cameras(8)
    split = Split(images=torch.zeros(8, 10, 12, 3), c2w=c2w,
                  intrinsics=torch.tensor([[12.0, 12.0, 6.0, 5.0]]).repeat(8, 1), names=[str(i) for i in range(8)])
    poses = sample_pseudo_poses(c2w, n_poses, 0, False, torch.tensor([0.0, 0, 1]), torch.zeros(3))
    return RandomViewRays(split, poses, None, torch.device("cpu"), torch.Generator().manual_seed(0)), poses


def test_random_view_rays_come_from_the_pose_bank_at_training_intrinsics():
    views, poses = _views()
    o, d = views.sample(500)
    eyes = poses[:, :3, 3]
    dist = (o[:, None] - eyes[None]).norm(dim=-1)
    assert dist.min(1).values.max() < 1e-5  # every origin is one of the bank's eyes
    # directions point into the image plane: camera-space x/z within the image's half-width
    # (cx / fx = 0.5), and no two rays repeat (continuous pixel positions)
    assert torch.unique(d, dim=0).shape[0] == 500
    idx = dist.argmin(1)
    cam = torch.einsum("nji,nj->ni", poses[idx, :3, :3], d)  # world -> camera (rotation transpose)
    assert (cam[:, 2] < 0).all() and ((cam[:, 0] / -cam[:, 2]).abs() <= 0.5 + 1e-5).all()
    assert ((cam[:, 1] / -cam[:, 2]).abs() <= 5.0 / 12.0 + 1e-5).all()


def test_online_rays_label_every_ray_once_without_a_buffer():
    views, _ = _views()
    teacher = _CountingTeacher()
    src = OnlineRays(views, teacher, fresh=0, buffer=0)
    rows = src.sample(300)
    assert rows.shape == (300, 9) and teacher.rays == 300
    torch.testing.assert_close(rows[:, 6:], teacher(rows[:, :3], rows[:, 3:6]))


def test_online_rays_with_a_buffer_label_only_the_fresh_share_in_chunks():
    views, _ = _views()
    teacher = _CountingTeacher()
    src = OnlineRays(views, teacher, fresh=50, buffer=1000, chunk=150)
    src.sample(200)  # the empty buffer is first filled up to a batch
    assert teacher.rays == 200 and src.size == 200
    calls = []
    for _ in range(30):
        before = teacher.rays
        rows = src.sample(200)
        calls.append(teacher.rays - before)
    # 50 fresh rays per step on average, labelled 150 at a time (every third step)
    assert teacher.rays == 200 + 30 * 50 and set(calls) == {0, 150} and calls.count(150) == 10
    assert src.size == 1000
    torch.testing.assert_close(rows[:, 6:], teacher(rows[:, :3], rows[:, 3:6]))  # labels match their rays


def test_fresh_rays_for_budget():
    # teacher as fast as the student: a 30% share labels 3/7 of the batch
    assert fresh_rays_for_budget(70 * 1024, 1e6, 1e6, 0.3) == 30 * 1024
    assert fresh_rays_for_budget(65536, 1e9, 1e6, 0.3) == 65536  # a fast teacher labels everything
    assert fresh_rays_for_budget(65536, 1.0, 1e6, 0.3) == 1024  # never fewer than 1024


# --------------------------------------------------------------------------- pseudo poses
def _blender_like_cameras(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * math.pi
    z = 0.15 + 0.8 * torch.rand(n, generator=g)
    r = torch.sqrt(1 - z * z)
    eyes = 4.0 * torch.stack([r * torch.cos(az), r * torch.sin(az), z], -1)
    return torch.stack([look_at(e, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])) for e in eyes]), z


def test_pseudo_poses_on_the_training_sphere_look_at_the_centre():
    c2w, z = _blender_like_cameras()
    torch.testing.assert_close(scene_centre(c2w, torch.ones(3)), torch.zeros(3), atol=1e-4, rtol=0)
    poses = sample_pseudo_poses(c2w, 500, seed=3, forward_facing=False, up=torch.tensor([0.0, 0, 1]),
                                centre_hint=torch.zeros(3))
    assert poses.shape == (500, 4, 4)
    eye = poses[:, :3, 3]
    torch.testing.assert_close(eye.norm(dim=-1), torch.full((500,), 4.0), atol=1e-4, rtol=0)
    height = eye[:, 2] / 4.0  # within the training band of heights, and covering it
    assert height.min() >= z.min() - 1e-5 and height.max() <= z.max() + 1e-5
    assert height.min() < z.min() + 0.05 and height.max() > z.max() - 0.05
    fwd = -poses[:, :3, 2]
    torch.testing.assert_close((fwd * -eye / 4.0).sum(-1), torch.ones(500), atol=1e-4, rtol=0)  # look at 0
    rot = poses[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(500, 3, 3), atol=1e-5, rtol=0)
    assert poses[:, :3, 0][:, 2].abs().max() < 1e-5  # no roll: right vector horizontal (up = z)
    again = sample_pseudo_poses(c2w, 500, seed=3, forward_facing=False, up=torch.tensor([0.0, 0, 1]),
                                centre_hint=torch.zeros(3))
    assert torch.equal(poses, again)


def test_pseudo_poses_forward_facing_stay_in_the_camera_box_and_cone():
    g = torch.Generator().manual_seed(1)
    eyes = torch.rand(20, 3, generator=g) * torch.tensor([1.0, 0.5, 0.2])
    targets = torch.tensor([0.0, 0.0, -10.0]) + torch.randn(20, 3, generator=g) * 0.5
    c2w = torch.stack([look_at(e, t, torch.tensor([0.0, 1, 0])) for e, t in zip(eyes, targets)])
    poses = sample_pseudo_poses(c2w, 300, seed=0, forward_facing=True, up=torch.tensor([0.0, 1, 0]),
                                centre_hint=torch.zeros(3))
    lo, hi = eyes.min(0).values, eyes.max(0).values
    assert ((poses[:, :3, 3] >= lo - 1e-6) & (poses[:, :3, 3] <= hi + 1e-6)).all()
    fwd_train = -c2w[:, :3, 2]
    mean = fwd_train.mean(0) / fwd_train.mean(0).norm()
    spread = torch.acos((fwd_train @ mean).clamp(-1, 1)).max()
    ang = torch.acos((-poses[:, :3, 2] @ mean).clamp(-1, 1))
    assert ang.max() <= spread + 1e-4 and ang.max() > 0.5 * spread


# ---------------------------------------------------------------------------------- backend
def _request(size=12):
    cam = Camera(look_at(torch.tensor([0.0, -4, 2]), torch.zeros(3), torch.tensor([0.0, 0, 1])), size, size,
                 size * 1.2, size * 1.2, size / 2, size / 2)
    return RenderRequest.from_camera(cam, 2.0, 6.0, outputs=frozenset({"rgb", "depth", "acc"}))


def test_backend_renders_rgb_only_and_reports_flops():
    torch.manual_seed(0)
    b = R2LBackend("cpu", VARIANTS["W64D8"])
    assert b.name == "r2l" and b.label == "R2L" and b.supported_outputs == frozenset({"rgb"})
    res = b.render(_request())
    assert res.rgb.shape == (12, 12, 3) and res.rgb.min() >= 0 and res.rgb.max() <= 1
    assert res.depth is None and res.acc is None
    assert res.samples_per_ray == 1.0 and res.flops_per_ray == R2LMLP(VARIANTS["W64D8"]).flops_per_ray() == 178_560
    assert torch.equal(b.render(_request()).rgb, res.rgb)  # deterministic (no jitter at test time)
    b.chunk_override = 16
    with pytest.raises(RenderAborted):
        b.render(_request(), should_abort=lambda: True)
    torch.testing.assert_close(b.render(_request()).rgb, res.rgb)  # chunking does not change the image


def test_backend_uses_its_trained_bounds_and_hot_swaps_shape():
    torch.manual_seed(0)
    net = R2LMLP(R2LMLPConfig(32, 4))
    b = R2LBackend("cpu", VARIANTS["W64D8"])
    b.load_state_dict(net.state_dict(), {"mlp": net.config.to_dict(), "near": 2.0, "far": 6.0})
    assert b.net.config == R2LMLPConfig(32, 4) and b.parameter_count() == net.parameter_count()
    req = _request(8)
    a = b.render(req).rgb
    other = RenderRequest(req.c2w, req.width, req.height, req.fx, req.fy, req.cx, req.cy, near=1.0, far=9.0)
    assert torch.equal(b.render(other).rgb, a)  # the light field ignores the request's near/far
    b.load_state_dict(net.state_dict(), {"mlp": net.config.to_dict(), "near": 1.0, "far": 9.0})
    assert not torch.equal(b.render(other).rgb, a)
    from models.backends.base import BackendUnavailable

    with pytest.raises(BackendUnavailable):
        b.load_state_dict(R2LMLP(R2LMLPConfig(16, 4)).state_dict(), {"mlp": net.config.to_dict()})


def test_backend_is_registered():
    from models.backends import registry

    assert registry.BACKENDS.get("r2l") is R2LBackend


FUSED_CHECK = """
import os, torch
os.environ["TRITON_INTERPRET"] = "1"
from models.fields.r2l_mlp import R2LMLP, R2LMLPConfig, encode_rays
from models.backends.r2l import FusedR2L
torch.manual_seed(0)
for cfg in [R2LMLPConfig(64, 8), R2LMLPConfig(64, 2, n_points=8, pos_freqs=4)]:
    net = R2LMLP(cfg)
    with torch.no_grad():
        for p in net.parameters(): p.mul_(2.0)
    o = torch.randn(200, 3) + torch.tensor([0, 0, 4.0]); d = torch.randn(200, 3); d[:, 2] = -1
    ref = net(encode_rays(o, d, torch.full((200,), 2.0), torch.full((200,), 6.0), cfg))
    got = FusedR2L(net, 2.0, 6.0, block_m=64, num_warps=4)(o, d)
    err = float((got - ref).abs().max())
    assert err < 1e-2, err
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (GPU machines have it)")
def test_fused_kernel_matches_the_network_in_the_triton_interpreter():
    # a subprocess: TRITON_INTERPRET must be set before triton is imported (CPU emulation, fp16 dots)
    out = subprocess.run([sys.executable, "-c", FUSED_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_kernel_matches_plain_fp16_on_cuda():
    torch.manual_seed(0)
    for cfg in (VARIANTS["W256D88"], VARIANTS["W128D22"], VARIANTS["W64D8"]):
        b = R2LBackend("cuda", cfg, accel="fused")
        req = _request(64)
        fused = b.render(req).rgb
        assert b.active_path() == "fused", b.accel_note
        plain = R2LBackend("cuda", cfg, accel="torch")
        plain.load_state_dict(b.net.state_dict(), {"mlp": cfg.to_dict()})
        ref32 = plain.render(RenderRequest(**{**req.__dict__, "precision": "fp32"})).rgb
        assert (fused - ref32).abs().max() < 2e-2
        assert FusedR2L.supports(cfg)


PLANES_CHECK = """
import os, torch
os.environ["TRITON_INTERPRET"] = "1"
from models.fields.feature_planes import FeaturePlanes, planes_kernel_error
from models.fields.r2l_mlp import R2LMLP, R2LMLPConfig, box_segments
from models.backends.r2l import FusedR2LPlanes
torch.manual_seed(0)
# gather kernels: values and table gradients against grid_sample, points in and outside the box
fp = FeaturePlanes(8, (4, 7, 16))
err = planes_kernel_error(fp, torch.device("cpu"), n=300)
assert err < 1e-5, err
# fused render kernel against the network (fp16 products in the kernel)
for cfg in [R2LMLPConfig(64, 4, n_points=4, encoding="planes", plane_channels=8, plane_resolutions=(8, 16)),
            R2LMLPConfig(64, 2, n_points=5, encoding="planes", plane_channels=8, plane_resolutions=(3, 6, 9, 12)),
            R2LMLPConfig(64, 2, n_points=3, encoding="planes", plane_channels=16, plane_resolutions=(5,),
                         ray_freqs=2),
            R2LMLPConfig(64, 2, n_points=6, encoding="planes", plane_channels=8, plane_resolutions=(8, 16),
                         mask_resolution=4),
            R2LMLPConfig(64, 2, n_points=12, encoding="planes", plane_channels=8, plane_resolutions=(8, 16),
                         mask_resolution=8)]:
    net = R2LMLP(cfg)
    net.set_box(torch.tensor([[-1.0, -0.8, -0.5], [1.0, 0.9, 1.2]]))
    if cfg.mask_resolution == 4:  # half the cells empty, in a pattern that every ray crosses
        idx = torch.arange(4)
        net.mask.copy_(((idx[:, None, None] + idx[None, :, None] + idx[None, None, :]) % 2).to(torch.uint8))
    if cfg.mask_resolution == 8:  # one kept cell: most points are empty on every ray of a tile and skipped
        net.mask.zero_()
        net.mask[3:5, 3:5, 4] = 1
    with torch.no_grad():
        for p in net.parameters(): p.mul_(2.0)
    o = torch.randn(150, 3) + torch.tensor([0, 0, 4.0]); d = torch.randn(150, 3) * 0.3; d[:, 2] = -1
    near, far = torch.full((150,), 2.0), torch.full((150,), 6.0)
    with torch.no_grad():
        ref = net(net.encode(o, d, near, far))
        got = FusedR2LPlanes(net, 2.0, 6.0, block_m=32, num_warps=4)(o, d)
    err = float((got - ref).abs().max())
    assert err < 5e-3, (cfg.name, err)
    if cfg.mask_resolution == 8:  # the kernel skipped some (tile, point) pairs and computed others
        t0, t1 = box_segments(o, d, near, far, net.box)
        t = t0[:, None] + (t1 - t0)[:, None] * torch.linspace(0, 1, cfg.n_points)
        x = (o[:, None] + t[..., None] * d[:, None] - net.box.mean(0)) / (0.5 * (net.box[1] - net.box[0]))
        keep = net.mask_at(x.reshape(-1, 3)).reshape(150, cfg.n_points)
        live = torch.nn.functional.pad(keep, (0, 0, 0, 10)).reshape(5, 32, cfg.n_points).any(1)
        assert live.any() and (~live).any(), live
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (GPU machines have it)")
def test_feature_plane_kernels_match_the_torch_path_in_the_triton_interpreter():
    out = subprocess.run([sys.executable, "-c", PLANES_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_feature_plane_kernels_on_cuda():
    from models.fields.feature_planes import planes_kernel_error

    torch.manual_seed(0)
    cfg = VARIANTS["P8x4-512-K32-W256D12"]
    assert planes_kernel_error(FeaturePlanes(8, cfg.plane_resolutions).cuda(), torch.device("cuda"), n=1 << 16) < 1e-4
    for cfg in (cfg, R2LMLPConfig.from_name("P8x4-512-K32-W256D12-M16")):
        b = R2LBackend("cuda", cfg, accel="fused")
        b.net.set_box(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        if cfg.mask_resolution:  # every other cell empty: every ray crosses kept and empty cells
            idx = torch.arange(cfg.mask_resolution, device="cuda")
            b.net.mask.copy_(((idx[:, None, None] + idx[None, :, None] + idx[None, None, :]) % 2).to(torch.uint8))
        req = _request(64)
        fused = b.render(req).rgb
        assert b.active_path() == "fused", b.accel_note
        plain = R2LBackend("cuda", cfg, accel="torch")
        plain.load_state_dict(b.net.state_dict(), {"mlp": cfg.to_dict()})
        ref32 = plain.render(RenderRequest(**{**req.__dict__, "precision": "fp32"})).rgb
        assert (fused - ref32).abs().max() < 2e-2, cfg.name


def test_occupancy_mask_zeroes_the_features_of_empty_cells():
    """Points in mask cells the teacher's grid leaves empty get zero features; the others keep the
    features of the same network without a mask; the mask is built from the grid conservatively."""
    torch.manual_seed(0)
    cfg = R2LMLPConfig(64, 2, n_points=8, encoding="planes", plane_channels=8, plane_resolutions=(8, 16),
                       mask_resolution=8)
    assert R2LMLPConfig.from_name(cfg.name) == cfg and cfg.name.endswith("-M8")
    net = R2LMLP(cfg)
    net.set_box(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    occ = torch.zeros(16, 16, 16, dtype=torch.bool)
    occ[4:6, 8:10, 10:12] = True  # a block in the scene aabb [-2, 2]^3: x in [-1, -0.5), y [0, 0.5), z [0.5, 1)
    kept = net.set_mask_from_occupancy(occ, torch.tensor([[-2.0] * 3, [2.0] * 3]), grow=0)
    assert 0 < kept < 0.1
    assert net.mask_at(torch.tensor([[-0.8, 0.2, 0.7]])).item()  # inside the block
    assert not net.mask_at(torch.tensor([[0.6, -0.6, -0.6], [1.5, 0.0, 0.0]])).any()  # empty, and outside the box
    plain = R2LMLP(R2LMLPConfig(**{**cfg.to_dict(), "plane_resolutions": cfg.plane_resolutions, "mask_resolution": 0}))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "mask"})
    o = torch.tensor([[-0.8, 0.2, 4.0]]).repeat(64, 1) + torch.randn(64, 3) * 0.05
    d = torch.tensor([[0.0, 0.0, -1.0]]).repeat(64, 1)
    near, far = torch.full((64,), 2.0), torch.full((64,), 6.0)
    with torch.no_grad():
        got = net.encode(o, d, near, far)[:, : cfg.n_points * cfg.point_features].reshape(64, cfg.n_points, -1)
        ref = plain.encode(o, d, near, far)[:, : cfg.n_points * cfg.point_features].reshape(64, cfg.n_points, -1)
    t0, t1 = box_segments(o, d, near, far, net.box)
    t = t0[:, None] + (t1 - t0)[:, None] * torch.linspace(0, 1, cfg.n_points)
    keep = net.mask_at((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).reshape(64, cfg.n_points)
    assert keep.any() and (~keep).any()
    assert torch.equal(got[~keep], torch.zeros_like(got[~keep]))
    assert torch.allclose(got[keep], ref[keep]) and ref[keep].abs().sum() > 0
    # gradients reach only the texels of kept points
    net.planes.table.grad = None
    net(net.encode(o, d, near, far)).sum().backward()
    assert net.planes.table.grad.abs().sum() > 0


def test_a_masked_student_distils_saves_and_renders(tiny_teacher_scene, procedural_dataset, tmp_path):
    from conftest import copy_scene
    from models.data import load_dataset
    from models.scene import Scene
    from models.training.distill_r2l import R2LDistillJob
    from models.training.engine import checkpoint_path, run_job
    from models.training.jobs import stage_config

    root = copy_scene(tiny_teacher_scene, tmp_path / "scene")
    cfg = stage_config("r2l", "tiny", {"mlp": R2LMLPConfig.from_name("P8x4-128-K32-W128D8-M32"), "steps": 20,
                                       "validate_every": 0})
    job = R2LDistillJob(Scene.load(root), load_dataset(procedural_dataset), cfg, torch.device("cpu"))
    assert any("occupancy mask 32^3" in n for n in job.notes), job.notes
    mask = job.student.mask.clone()
    assert 0 < mask.float().mean() < 1
    run_job(job, lambda e: None, checkpoint=checkpoint_path(root, "r2l"))
    b = R2LBackend("cpu")
    b.load(Scene.load(root))
    assert b.config.mask_resolution == 32 and torch.equal(b.net.mask, mask)
    out = b.render(_request(16)).rgb
    assert torch.isfinite(out).all()
    # a scene without an occupancy grid: the same network without the mask, and a note saying so
    bare = Scene.load(copy_scene(tiny_teacher_scene, tmp_path / "bare"))
    bare.occupancy = None
    bare.save_manifest()
    job = R2LDistillJob(Scene.load(bare.root), load_dataset(procedural_dataset), cfg, torch.device("cpu"))
    assert job.config.mlp == R2LMLPConfig.from_name("P8x4-128-K32-W128D8") and job.student.config.mask_resolution == 0
    assert any("no occupancy grid" in n and "distilling P8x4-128-K32-W128D8" in n for n in job.notes), job.notes
