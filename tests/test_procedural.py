"""Procedural scene: golden rays, determinism, camera poses, and the round trip through the loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.cameras import Camera, camera_rays, look_at
from models.data import load_dataset
from models.data.blender import load_blender
from models.data.images import box_downsample
from models.data.procedural import DEFAULT_LIGHTS, ProceduralScene

SCENE = ProceduralScene()


def camera(c2w: torch.Tensor, size: int = 24, angle_x: float = 0.69) -> Camera:
    f = 0.5 * size / math.tan(0.5 * angle_x)
    return Camera(c2w, size, size, f, f, size / 2, size / 2)


def test_golden_top_of_checker_sphere():
    # camera 3 units above the checker sphere (centre (-0.35, -0.3, -0.2), r 0.4) looking straight
    # down with a huge focal length, so every sub-pixel ray hits the top point (-0.35, -0.3, 0.2):
    # depth = 3 - 0.2 = 2.8, full coverage.
    eye = torch.tensor([-0.35, -0.3, 3.0])
    cam = Camera(look_at(eye, torch.tensor([-0.35, -0.3, -0.2]), torch.tensor([0.0, 0.0, 1.0])), 3, 3, 1e4, 1e4, 1.5, 1.5)
    out = SCENE.render(cam)
    assert out["alpha"].tolist() == [[1.0] * 3] * 3
    assert out["depth"] == pytest.approx(torch.full((3, 3), 2.8), abs=1e-4)
    # Shading by hand at the top: n = v = (0, 0, 1), no shadow (nothing above the sphere).
    sphere = SCENE.primitives[1]
    diffuse, spec = SCENE.ambient, 0.0
    for light in DEFAULT_LIGHTS:
        l = torch.tensor(light.direction) / torch.tensor(light.direction).norm()
        h = (l + torch.tensor([0.0, 0.0, 1.0])) / (l + torch.tensor([0.0, 0.0, 1.0])).norm()
        diffuse += light.intensity * float(l[2])  # n.l = l_z
        spec += light.intensity * sphere.material.specular * float(h[2]) ** sphere.material.shininess
    e1, e2 = (torch.tensor(c) * diffuse + spec for c in (sphere.color, sphere.color2))
    # the pole is a corner of checker cells: each of the 2x2 sub-rays sees one of the two colours
    centre = out["rgb"][1, 1]
    mixes = [(k * e1 + (4 - k) * e2) / 4 for k in range(5)]
    assert any(torch.allclose(centre, m, atol=1e-5) for m in mixes), (centre, e1, e2)


def test_empty_sky_and_premultiplied_outputs():
    up_cam = camera(look_at(torch.tensor([0.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 5.0]), torch.tensor([0.0, 1.0, 0.0])))
    out = SCENE.render(up_cam)
    assert out["alpha"].abs().sum() == 0 and out["rgb"].abs().sum() == 0 and out["depth"].abs().sum() == 0
    out = SCENE.render(camera(SCENE.camera_poses(1, 0, "test")[0]))
    a = out["alpha"]
    assert a[0, 0] == 0 and a.max() == 1 and ((a > 0) & (a < 1)).any()  # anti-aliased silhouettes
    assert (out["rgb"] <= a[..., None] + 1e-6).all()  # premultiplied colour never exceeds coverage


def test_depth_is_z_depth_of_points_inside_unit_cube():
    cam = camera(SCENE.camera_poses(1, 3, "train")[0], size=32)
    out = SCENE.render(cam)
    o, d = camera_rays(cam)
    full = out["alpha"] == 1
    pts = o[full] + (out["depth"][full])[:, None] * d[full]  # camera_rays: t is z-depth
    assert full.sum() > 50
    assert pts.abs().max() <= 1.0 + 1e-3
    assert float(out["depth"][full].min()) > 2.0 and float(out["depth"].max()) < 6.0


def test_specular_is_view_dependent():
    # the same point on the red ball seen along two directions gets different colours
    ball = SCENE.primitives[4]
    p = torch.tensor(ball.centre) + torch.tensor([0.0, 0.0, ball.radius])
    dirs = torch.tensor([[0.6, -0.5, -1.0], [-0.6, 0.5, -1.0]])
    origins = p - 3.0 * dirs
    out = SCENE.trace(origins, dirs)
    assert out["hit"].all()
    assert out["t"].tolist() == pytest.approx([3.0, 3.0], abs=1e-4)
    assert (out["rgb"][0] - out["rgb"][1]).abs().max() > 0.05


def test_determinism_and_camera_poses():
    a = SCENE.camera_poses(5, 0, "train")
    assert torch.equal(a, SCENE.camera_poses(5, 0, "train"))
    assert not torch.allclose(a, SCENE.camera_poses(5, 0, "test"))
    assert not torch.allclose(a, SCENE.camera_poses(5, 1, "train"))
    eyes = a[:, :3, 3]
    assert eyes.norm(dim=-1) == pytest.approx(torch.full((5,), 4.0), abs=1e-5)
    assert (eyes[:, 2] > 0).all()
    # looking at the origin: the -z axis points from the eye to the origin
    fwd = -a[:, :3, 2]
    assert torch.allclose(fwd, -eyes / 4.0, atol=1e-5)
    cam = camera(a[0])
    r1, r2 = SCENE.render(cam), SCENE.render(cam)
    assert all(torch.equal(r1[k], r2[k]) for k in ("rgb", "alpha", "depth"))


def test_write_dataset_round_trip(tmp_path):
    out = SCENE.write_dataset(tmp_path / "proc", size=24, views=(3, 2, 2))
    data = load_dataset(out)
    assert data.kind == "procedural"
    assert (data.near, data.far) == (2.0, 6.0)
    assert data.aabb.flatten().tolist() == pytest.approx([-1.2] * 3 + [1.2] * 3)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3, "val": 2, "test": 2}
    split = data.splits["val"]
    f = 0.5 * 24 / math.tan(0.5 * 0.69)
    assert split.intrinsics[0].tolist() == pytest.approx([f, f, 12.0, 12.0], rel=1e-6)
    assert torch.equal(split.c2w, SCENE.camera_poses(2, 0, "val"))
    for i in range(2):
        ref = SCENE.render(camera(split.c2w[i]))
        over_white = ref["rgb"] + (1 - ref["alpha"][..., None])
        # 8-bit straight rgb and alpha: |error| <= 0.5/255 * a + 0.5/255 * |rgb - bg| <= 1/255
        assert (split.images[i] - over_white).abs().max() <= 1.0 / 255 + 1e-6
        assert (split.alpha[i] - ref["alpha"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(split.depth[i], ref["depth"])  # float32 .npy: exact
    half = load_blender(out, ("val",), half_res=True).splits["val"]
    assert half.images.shape == (2, 12, 12, 3)
    assert np.allclose(half.depth[0].numpy(), box_downsample(split.depth[0].numpy(), 2), atol=1e-6)


def test_write_dataset_is_atomic_and_careful(tmp_path):
    target = tmp_path / "proc"
    SCENE.write_dataset(target, size=8, views=(1, 0, 1))
    SCENE.write_dataset(target, size=8, views=(2, 0, 1))  # replaces its own earlier output
    assert len(load_blender(target).splits["train"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proc"]  # no temp folders left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        SCENE.write_dataset(foreign, size=8, views=(1, 0, 0))
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "proc"]
