"""Golden tests for ray generation and NDC (expected values worked out by hand in comments)."""

import math

import torch

from models.cameras import Camera, camera_rays, look_at, ndc_rays, pixel_rays, ray_aabb, sample_pixel_batch


def test_pixel_centre_directions_identity_pose():
    # W = H = 2, fx = fy = 1, cx = cy = 1. Pixel (u=0, v=0) has its centre at (0.5, 0.5):
    # d = ((0.5 - 1) / 1, -(0.5 - 1) / 1, -1) = (-0.5, 0.5, -1)  (top-left pixel looks up-left)
    # Pixel (1, 1): centre (1.5, 1.5) -> (0.5, -0.5, -1).
    cam = Camera(torch.eye(4), 2, 2, 1.0, 1.0, 1.0, 1.0)
    o, d = camera_rays(cam)
    assert o.shape == (2, 2, 3) and d.shape == (2, 2, 3)
    torch.testing.assert_close(d[0, 0], torch.tensor([-0.5, 0.5, -1.0]))
    torch.testing.assert_close(d[1, 1], torch.tensor([0.5, -0.5, -1.0]))
    torch.testing.assert_close(d[0, 1], torch.tensor([0.5, 0.5, -1.0]))
    assert torch.all(o == 0)


def test_rotated_and_translated_pose():
    # c2w rotates +90 deg about z (x -> y, y -> -x) and moves the camera to (1, 2, 3).
    # R @ (-0.5, 0.5, -1) = (-0.5, -0.5, -1).
    c2w = torch.tensor([[0.0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    o, d = pixel_rays(c2w, 1.0, 1.0, 1.0, 1.0, torch.tensor([0]), torch.tensor([0]))
    torch.testing.assert_close(d[0], torch.tensor([-0.5, -0.5, -1.0]))
    torch.testing.assert_close(o[0], torch.tensor([1.0, 2.0, 3.0]))


def test_batched_poses_match_single_pose():
    g = torch.Generator().manual_seed(0)
    poses = torch.stack([look_at(torch.randn(3, generator=g) * 4, torch.zeros(3), torch.tensor([0, 0, 1.0]))
                         for _ in range(3)])
    img, u, v = sample_pixel_batch(3, 10, 12, 50, g)
    o, d = pixel_rays(poses[img], 9.0, 9.5, 6.0, 5.0, u, v)
    for k in range(50):
        o1, d1 = pixel_rays(poses[img[k]], 9.0, 9.5, 6.0, 5.0, u[k:k + 1], v[k:k + 1])
        torch.testing.assert_close(o[k], o1[0])
        torch.testing.assert_close(d[k], d1[0])
    assert (u < 12).all() and (v < 10).all()


def test_precrop_restricts_to_centre():
    g = torch.Generator().manual_seed(1)
    _, u, v = sample_pixel_batch(2, 100, 100, 1000, g, precrop=0.5)
    assert u.min() >= 25 and u.max() < 75 and v.min() >= 25 and v.max() < 75


def test_ndc_golden():
    # H = W = 2, focal = 1, near = 1. A ray from the origin straight down -z is first moved to
    # the near plane: t = -(1 + 0) / -1 = 1 -> o = (0, 0, -1). Then
    # o_ndc = (-1/(W/2f) * ox/oz, ..., 1 + 2 near / oz) = (0, 0, -1); d_ndc z = -2 near / oz = 2.
    o, d = ndc_rays(2, 2, 1.0, 1.0, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]))
    torch.testing.assert_close(o[0], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(d[0], torch.tensor([0.0, 0.0, 2.0]))
    # Direction (0.5, 0, -1): o moves to (0.5, 0, -1); o_ndc x = -1 * (0.5 / -1) = 0.5 and
    # d_ndc x = -(dx/dz - ox/oz) = -(-0.5 + 0.5) = 0: a ray through the origin keeps its x in NDC.
    o, d = ndc_rays(2, 2, 1.0, 1.0, torch.zeros(1, 3), torch.tensor([[0.5, 0.0, -1.0]]))
    torch.testing.assert_close(o[0], torch.tensor([0.5, 0.0, -1.0]))
    torch.testing.assert_close(d[0], torch.tensor([0.0, 0.0, 2.0]))


def test_look_at_points_minus_z_at_target():
    c2w = look_at(torch.tensor([0.0, -4.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    forward = -c2w[:3, 2]
    torch.testing.assert_close(forward, torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(c2w[:3, 1], torch.tensor([0.0, 0.0, 1.0]))  # camera up = world up
    assert math.isclose(float(torch.det(c2w[:3, :3])), 1.0, abs_tol=1e-6)


def test_ray_aabb():
    # A ray from (-3, 0, 0) along +x hits the unit box [-1, 1]^3 at t = 2 and leaves at t = 4.
    t0, t1 = ray_aabb(torch.tensor([[-3.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert float(t0) == 2.0 and float(t1) == 4.0
    t0, t1 = ray_aabb(torch.tensor([[-3.0, 5, 0]]), torch.tensor([[1.0, 0, 0]]), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert float(t0) > float(t1)  # miss


def test_look_at_batch_matches_single():
    from models.cameras import look_at_batch

    g = torch.Generator().manual_seed(2)
    eye, tgt = torch.randn(5, 3, generator=g) * 3, torch.randn(5, 3, generator=g) * 0.1
    up = torch.tensor([0.0, 0.0, 1.0])
    batch = look_at_batch(eye, tgt, up)
    for i in range(5):
        torch.testing.assert_close(batch[i], look_at(eye[i], tgt[i], up))
