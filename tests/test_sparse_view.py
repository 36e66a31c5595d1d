"""RegNeRF pieces: depth-smoothness loss, annealed sample interval, sparse split selection."""

import math

import pytest
import torch

from models.data import Split
from models.training.sparse_view import (
    SparseViewConfig,
    annealed_bounds,
    depth_tv_loss,
    select_views,
    smoothness_weight,
)


def test_depth_tv_loss_golden():
    # 3x3 patch with depth increasing by 1 per column and 2 per row:
    # d = [[0, 1, 2], [2, 3, 4], [4, 5, 6]]. Over the 2x2 top-left block, every horizontal
    # difference is 1 and every vertical difference 2: (1^2 + 2^2) = 5 at each of 4 places -> mean 5.
    d = torch.tensor([[[0.0, 1, 2], [2, 3, 4], [4, 5, 6]]])
    assert float(depth_tv_loss(d)) == pytest.approx(5.0)
    assert float(depth_tv_loss(torch.full((2, 8, 8), 3.0))) == 0.0
    # a single step edge in an 8x8 patch: column 4 jumps by 1 -> 7 of the 49 places see (1)^2
    e = torch.zeros(1, 8, 8)
    e[:, :, 4:] = 1.0
    assert float(depth_tv_loss(e)) == pytest.approx(7 / 49)


def test_annealed_interval():
    cfg = SparseViewConfig(anneal_steps=512, anneal_start=0.5, anneal_mid=0.5)
    # near 2, far 6, mid 4: step 0 keeps p = 0.5 of the range -> [3, 5]
    assert annealed_bounds(2.0, 6.0, 0, cfg) == pytest.approx((3.0, 5.0))
    # half way: p = 0.5 + 0.5 * 256 / 512 = 0.75 -> [2.5, 5.5]
    assert annealed_bounds(2.0, 6.0, 256, cfg) == pytest.approx((2.5, 5.5))
    assert annealed_bounds(2.0, 6.0, 512, cfg) == (2.0, 6.0)
    assert annealed_bounds(2.0, 6.0, 10_000, cfg) == (2.0, 6.0)
    # LLFF (NDC 0..1, mid at 100 %, p_s 1e-4): starts at the far end and grows toward the near plane
    llff = SparseViewConfig()
    lo, hi = annealed_bounds(0.0, 1.0, 0, llff)
    assert hi == 1.0 and lo == pytest.approx(1 - 1e-4)
    assert annealed_bounds(0.0, 1.0, 256, llff)[0] == pytest.approx(1 - (1e-4 + (1 - 1e-4) * 0.5))


def test_smoothness_weight_decay():
    cfg = SparseViewConfig()
    assert smoothness_weight(0, cfg) == 400.0
    assert smoothness_weight(256, cfg) == pytest.approx((400.0 + 0.1) / 2)
    assert smoothness_weight(512, cfg) == pytest.approx(0.1)
    assert smoothness_weight(5000, cfg) == pytest.approx(0.1)


def test_sparse_split_selection():
    n = 17  # fern: 20 images, test views 0, 8, 16 held out -> 17 train views
    split = Split(names=[f"img{i}" for i in range(n)], images=torch.zeros(n, 2, 2, 3),
                  c2w=torch.eye(4).repeat(n, 1, 1), intrinsics=torch.ones(n, 4))
    # linspace(0, 16, 3) = [0, 8, 16]; linspace(0, 16, 6) = [0, 3.2, 6.4, 9.6, 12.8, 16] -> rounded
    assert select_views(split, 3)[1] == [0, 8, 16]
    assert select_views(split, 6)[1] == [0, 3, 6, 10, 13, 16]
    sub, idx = select_views(split, 9)
    assert idx == [0, 2, 4, 6, 8, 10, 12, 14, 16] and len(sub) == 9 and sub.names[1] == "img2"
    assert select_views(split, 0)[1] == list(range(n))


def test_llff_sparse_protocol_on_fern(shared_data):
    from models.data import load_dataset

    data = load_dataset(shared_data / "nerf_llff_data" / "fern", factor=8)
    train = data.splits["train"]
    sub, idx = select_views(train, 3)
    # fern's train split is images 1-7, 9-15, 17-19; picks 0, 8, 16 of it -> images 1, 10, 19
    assert [int(n.split("image")[-1][:3]) for n in sub.names] == [1, 10, 19]
    assert [int(n.split("image")[-1][:3]) for n in data.splits["test"].names] == [0, 8, 16]
    assert math.isclose(float(sub.intrinsics[0, 0]), float(train.intrinsics[0, 0]))


# ------------------------------------------------------------------------------- FreeNeRF
def test_freenerf_frequency_mask_golden_values():
    from models.training.sparse_view import freq_mask

    # 10 bands over the first 90% of training: t/T = progress / 0.9, ptr = 10 t/T + 1
    torch.testing.assert_close(freq_mask(10, 0.0, 0.9), torch.tensor([1.0] + [0.0] * 9))  # ptr 1
    torch.testing.assert_close(freq_mask(10, 0.45, 0.9), torch.tensor([1.0] * 6 + [0.0] * 4))  # ptr 6
    torch.testing.assert_close(freq_mask(10, 0.495, 0.9), torch.tensor([1.0] * 6 + [0.5] + [0.0] * 3))  # ptr 6.5
    torch.testing.assert_close(freq_mask(10, 0.9, 0.9), torch.ones(10))  # from 90% on: all bands
    torch.testing.assert_close(freq_mask(4, 0.2, 0.0), torch.ones(4))  # no regularisation


def test_the_mask_reaches_only_the_position_encoding_bands():
    from models.fields.nerf_mlp import NerfMLP, NerfMLPConfig

    torch.manual_seed(0)
    net = NerfMLP(NerfMLPConfig(depth=2, width=16, skips=(), pos_freqs=3, dir_freqs=1, view_width=8))
    x, d = torch.randn(5, 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    full = net(x, d)
    net.freq_mask = torch.ones(3)
    torch.testing.assert_close(net(x, d), full)  # all visible: unchanged
    net.freq_mask = torch.zeros(3)
    masked = net.density(x)
    w = net.trunk[0].weight[:, :3]  # with every band masked only the raw coordinates reach the net
    h = torch.relu(x @ w.T + net.trunk[0].bias)
    h = torch.relu(net.trunk[1](h))
    torch.testing.assert_close(masked, torch.relu(net.sigma(h).squeeze(-1)))


def test_occlusion_points_are_the_first_samples_of_each_ray():
    from models.training.sparse_view import SparseViewConfig, occlusion_points

    cfg = SparseViewConfig(occlusion_samples=10, occlusion_of=128)
    o = torch.zeros(50, 3)
    d = torch.tensor([[0.0, 0.0, -1.0]]).repeat(50, 1)
    near, far = torch.full((50,), 2.0), torch.full((50,), 6.0)
    pts = occlusion_points(o, d, near, far, cfg, torch.Generator().manual_seed(0)).reshape(50, 10, 3)
    t = -pts[..., 2]
    # the first 10 of 128 bins of [2, 6]: t in [2, 2 + 4 * 10 / 128], one point per bin
    assert (t >= 2.0).all() and (t <= 2.0 + 4.0 * 10 / 128 + 1e-6).all()
    bins = ((t - 2.0) / (4.0 / 128)).floor()
    torch.testing.assert_close(bins, torch.arange(10.0).expand(50, 10))


def test_sparse_reg_modes():
    from models.training.configs import TeacherConfig

    reg, free, both, plain = (TeacherConfig.sparse_settings(3, m) for m in ("regnerf", "freenerf", "both", None))
    assert reg.depth_smoothness and reg.anneal_steps == 512 and not reg.freq_reg and reg.occlusion_weight == 0
    assert free.freq_reg and free.occlusion_weight == 0.01 and not free.depth_smoothness and free.anneal_steps == 0
    assert both.freq_reg and both.depth_smoothness and both.occlusion_weight == 0.01
    assert not plain.freq_reg and not plain.depth_smoothness and plain.grad_clip == 0
    assert TeacherConfig.sparse_settings(3, True) == reg  # the dialog's checkbox
