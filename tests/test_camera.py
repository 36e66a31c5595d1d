"""OrbitCamera and camera paths: pure math, no Qt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.cameras import camera_rays, look_at
from viewer.camera import (
    CameraPose,
    OrbitCamera,
    interpolate_poses,
    look_at_rotation,
    orbit_path,
    request_for_pose,
)


class _Scene:
    """The parts of models.scene.Scene that the camera reads."""

    def __init__(self, cameras=None, aabb=((-1, -1, -1), (1, 1, 1)), up=(0, 0, 1)):
        self.cameras = cameras or {}
        self.aabb = [list(aabb[0]), list(aabb[1])]
        self.up = list(up)


def _cam_dict(eye, target=(0, 0, 0), w=80, h=60, f=70.0):
    c2w = look_at(torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32),
                  torch.tensor([0.0, 0.0, 1.0]))
    return {"name": "x", "c2w": c2w.tolist(), "width": w, "height": h, "fx": f, "fy": f, "cx": w / 2, "cy": h / 2}


def _is_rotation(r):
    return np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)


def test_look_at_matches_models_convention():
    eye, target = np.array([3.0, -2.0, 1.5]), np.array([0.2, 0.1, -0.3])
    ours = look_at_rotation(eye, target, np.array([0.0, 0.0, 1.0]))
    ref = look_at(torch.tensor(eye), torch.tensor(target), torch.tensor([0.0, 0.0, 1.0])).numpy()[:3, :3]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # the camera looks down -z: -back points from eye to target
    np.testing.assert_allclose(-ours[:, 2], (target - eye) / np.linalg.norm(target - eye), atol=1e-12)


def test_orbit_keeps_target_and_distance_and_turns():
    cam = OrbitCamera(eye=(0, -4, 0), target=(0, 0, 0))
    eye0 = cam.eye.copy()
    cam.orbit(100, 0)  # 100 px at 0.4 deg/px = 40 degrees of yaw about +z
    np.testing.assert_allclose(cam.target, 0, atol=1e-12)
    assert math.isclose(np.linalg.norm(cam.eye), 4.0, rel_tol=1e-9)
    cos = np.dot(eye0, cam.eye) / 16.0
    assert math.isclose(math.degrees(math.acos(cos)), 40.0, rel_tol=1e-6)
    assert math.isclose(cam.eye[2], 0.0, abs_tol=1e-9)  # pure yaw stays on the horizon
    assert _is_rotation(cam.rotation)
    # drag down by 50 px: 20 degrees of pitch, the eye rises
    cam.orbit(0, 50)
    assert math.isclose(math.degrees(math.asin(cam.eye[2] / 4.0)), 20.0, rel_tol=1e-6)


def test_orbit_stops_short_of_the_pole():
    cam = OrbitCamera(eye=(0, -4, 0), target=(0, 0, 0))
    cam.orbit(0, 10_000)  # dragged down far past the top
    angle = math.degrees(math.acos(np.dot(cam.back, cam.up)))
    assert math.isclose(angle, 3.0, abs_tol=1e-6)
    right_before = cam.right.copy()
    cam.orbit(0, 10)  # pushing further changes nothing and never flips
    np.testing.assert_allclose(cam.right, right_before, atol=1e-9)
    assert cam.cam_up @ cam.up > 0


def test_pan_moves_the_target_point_with_the_mouse():
    cam = OrbitCamera(eye=(0, -4, 0), target=(0, 0, 0), fov_deg=90.0)
    # fov 90 at distance 4: the viewport spans 8 world units over 400 px -> 0.02 per pixel
    cam.pan(100, 0, viewport_height=400)  # drag right: the scene moves right, the camera left
    np.testing.assert_allclose(cam.target, [-2.0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(cam.eye, [-2.0, -4.0, 0], atol=1e-9)
    cam.pan(0, 50, viewport_height=400)  # drag down: camera moves up
    np.testing.assert_allclose(cam.target, [-2.0, 0, 1.0], atol=1e-9)


def test_dolly_scales_distance_and_is_clamped():
    cam = OrbitCamera(eye=(0, -4, 0), target=(0, 0, 0), scene_radius=1.0)
    cam.dolly(2)
    assert math.isclose(cam.distance, 4 * 0.81)
    np.testing.assert_allclose(cam.target, 0)
    cam.dolly(-1000)
    assert cam.distance == pytest.approx(100.0)
    cam.dolly(1000)
    assert cam.distance == pytest.approx(1e-3)


def test_fly_translates_eye_and_target():
    cam = OrbitCamera(eye=(0, -4, 0), target=(0, 0, 0), scene_radius=2.0)
    cam.fly(1, 0, 0, 0.5)  # forward (+y here) at 1 radius/s for 0.5 s = 1 unit
    np.testing.assert_allclose(cam.eye, [0, -3, 0], atol=1e-9)
    np.testing.assert_allclose(cam.target, [0, 1, 0], atol=1e-9)
    cam.fly(0, 1, 1, 0.5)  # right (+x) and up (+z)
    np.testing.assert_allclose(cam.eye, [1, -3, 1], atol=1e-9)


def test_reset_restores_the_initial_view():
    cam = OrbitCamera(eye=(1, -4, 2), target=(0, 0, 0))
    c0 = cam.c2w()
    cam.orbit(30, 40)
    cam.pan(10, 5, 100)
    cam.dolly(3)
    cam.set_fov(80)
    assert not np.allclose(cam.c2w(), c0)
    cam.reset()
    np.testing.assert_allclose(cam.c2w(), c0)
    assert cam.fov_deg == 50.0


def test_initial_view_and_snapping_use_dataset_cameras():
    scene = _Scene({"train": [_cam_dict((0, -4, 1)), _cam_dict((4, 0, 1))], "test": [_cam_dict((3, 3, 2))]})
    cam = OrbitCamera.for_scene(scene)
    first = np.asarray(scene.cameras["test"][0]["c2w"])  # test split first
    np.testing.assert_allclose(cam.c2w(), first, atol=1e-6)
    # orbit target: the point of the optical axis nearest to the box centre (the origin here)
    np.testing.assert_allclose(cam.target, 0, atol=1e-6)
    assert cam.fov_deg == pytest.approx(math.degrees(2 * math.atan(30 / 70.0)))
    assert cam.snap_next(1)  # ] from a free view: the first dataset camera
    assert cam.dataset_index == 0
    assert cam.snap_next(1)
    np.testing.assert_allclose(cam.c2w(), np.asarray(scene.cameras["train"][0]["c2w"]), atol=1e-6)
    assert cam.snap_next(-1) and cam.dataset_index == 0
    assert cam.snap_next(-1) and cam.dataset_index == 2  # wraps around
    cam.orbit(5, 0)
    assert cam.dataset_index == -1


def test_initial_view_without_cameras_frames_the_box():
    scene = _Scene(aabb=((1, 1, 1), (3, 3, 3)))
    cam = OrbitCamera.for_scene(scene)
    np.testing.assert_allclose(cam.target, [2, 2, 2])
    radius = math.sqrt(3)
    # the bounding sphere fits in the vertical field of view
    assert math.degrees(math.asin(radius / cam.distance)) < cam.fov_deg / 2
    assert cam.eye[2] > 2  # looking from above
    assert not cam.snap_next(1)


def test_request_rays_go_through_the_target():
    cam = OrbitCamera(eye=(2, -3, 1), target=(0.5, 0.2, -0.1), fov_deg=60)
    req = cam.request(40, 30, 2.0, 6.0, background=(0, 0, 0))
    assert (req.width, req.height, req.near, req.far, req.background) == (40, 30, 2.0, 6.0, (0, 0, 0))
    assert req.fy == pytest.approx(15 / math.tan(math.radians(30)))
    assert req.fx == req.fy and (req.cx, req.cy) == (20, 15)
    _, d = camera_rays(req.camera())
    # the centre of the image (between the 4 middle pixels) looks at the target
    centre = d[14:16, 19:21].reshape(-1, 3).mean(0).double().numpy()
    to_target = cam.target - cam.eye
    cos = centre @ to_target / np.linalg.norm(centre) / np.linalg.norm(to_target)
    assert cos > 0.99999
    # top row of pixels looks up (image rows grow downwards)
    assert d[0, 20] @ torch.tensor(cam.cam_up, dtype=torch.float32) > 0


def test_interpolate_poses_hits_keyframes_and_stays_rigid():
    k0 = CameraPose(look_at(torch.tensor([0.0, -4, 0]), torch.zeros(3), torch.tensor([0.0, 0, 1])).numpy(), 40.0)
    k1 = CameraPose(look_at(torch.tensor([4.0, 0, 1]), torch.zeros(3), torch.tensor([0.0, 0, 1])).numpy(), 60.0)
    k2 = CameraPose(look_at(torch.tensor([0.0, 4, 2]), torch.zeros(3), torch.tensor([0.0, 0, 1])).numpy(), 50.0)
    path = interpolate_poses([k0, k1, k2], 9)
    assert len(path) == 9
    np.testing.assert_allclose(path[0].c2w, k0.c2w, atol=1e-6)
    np.testing.assert_allclose(path[4].c2w, k1.c2w, atol=1e-6)
    np.testing.assert_allclose(path[-1].c2w, k2.c2w, atol=1e-6)
    # the field of view is on the same Catmull-Rom spline: halfway from k0 (40) to k1 (60), the end
    # keyframe repeated, p = (-p0 + 9 p1 + 9 p2 - p3) / 16 = (-40 + 360 + 540 - 50) / 16 = 50.625
    assert path[2].fov_deg == pytest.approx(50.625)
    linear = interpolate_poses([k0, k1, k2], 9, smoothness=0.0)
    assert linear[2].fov_deg == pytest.approx(50.0)  # linear: halfway between 40 and 60
    np.testing.assert_allclose(linear[2].c2w[:3, 3], (k0.c2w[:3, 3] + k1.c2w[:3, 3]) / 2, atol=1e-6)
    for p in path:
        assert _is_rotation(p.c2w[:3, :3])


def test_orbit_path_circles_the_target():
    cam = OrbitCamera(eye=(0, -4, 2), target=(0, 0, 0.5))
    before = cam.c2w()
    poses = orbit_path(cam, 8)
    np.testing.assert_allclose(cam.c2w(), before)  # the camera itself did not move
    np.testing.assert_allclose(poses[0].c2w, before, atol=1e-9)
    for p in poses:
        eye = p.c2w[:3, 3]
        assert np.linalg.norm(eye - cam.target) == pytest.approx(cam.distance)
        assert eye[2] == pytest.approx(before[2, 3])
    req = request_for_pose(poses[3], 32, 24, 2, 6)
    assert req.c2w == tuple(tuple(float(x) for x in row) for row in poses[3].c2w)


def test_near_and_far_follow_the_camera_distance():
    from types import SimpleNamespace

    from viewer.camera import view_bounds

    cams = {"train": [{"c2w": np.eye(4).tolist()} for _ in range(2)]}
    for c, z in zip(cams["train"], (4.0, 4.0)):
        c["c2w"][2][3] = z  # dataset cameras 4 units from the centre
    scene = SimpleNamespace(ndc=None, aabb=[[-1.5] * 3, [1.5] * 3], near=2.0, far=6.0, cameras=cams)
    assert view_bounds(scene, [0, 0, 4.0]) == pytest.approx((2.0, 6.0))  # the trained bounds at dataset distance
    assert view_bounds(scene, [0, 0, 10.0]) == pytest.approx((8.0, 12.0))  # zoomed out: the same slab, further
    near, far = view_bounds(scene, [0, 0, 1.0])  # flown close: near just in front of the camera
    assert 0 < near < 0.01 and far == pytest.approx(3.0)
    ndc = SimpleNamespace(ndc={"focal": 1.0}, aabb=[[-1] * 3, [1] * 3], near=0.0, far=1.0, cameras=cams)
    assert view_bounds(ndc, [0, 0, 9.0]) == (0.0, 1.0)
