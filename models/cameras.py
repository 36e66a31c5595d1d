"""Pinhole cameras and ray generation (OpenGL/Blender convention).

Convention everywhere inside the project: a camera-to-world matrix ``c2w`` (4x4, or 3x4) whose
camera looks down its local -z axis with +y up and +x right. Pixel (u, v) has its centre at
(u + 0.5, v + 0.5); v grows downwards in the image. The ray direction for a pixel is

    d_cam = ((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1)        d_world = R @ d_cam

so directions are *not* normalised: their camera-space z component is -1, which makes the ray
parameter ``t`` equal to the depth along the optical axis (what depth maps store).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Camera:
    """One pinhole camera: intrinsics in pixels plus a camera-to-world pose."""

    c2w: torch.Tensor
    """(4, 4) camera-to-world matrix, OpenGL convention (looks down -z, +y up)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""
    fx: float
    """Focal length along x, pixels."""
    fy: float
    """Focal length along y, pixels."""
    cx: float
    """Principal point x, pixels (W/2 for a centred camera)."""
    cy: float
    """Principal point y, pixels (H/2 for a centred camera)."""

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera rendering ``width x height`` pixels (intrinsics rescaled)."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.c2w, width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)


def to_4x4(c2w: torch.Tensor) -> torch.Tensor:
    """Pad (..., 3, 4) poses to (..., 4, 4); (..., 4, 4) pass through."""
    if c2w.shape[-2:] == (4, 4):
        return c2w
    if c2w.shape[-2:] != (3, 4):
        raise ValueError(f"camera pose must be 3x4 or 4x4, got {tuple(c2w.shape[-2:])}")
    bottom = torch.zeros(*c2w.shape[:-2], 1, 4, dtype=c2w.dtype, device=c2w.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([c2w, bottom], dim=-2)


def pixel_rays(
    c2w: torch.Tensor,
    fx: torch.Tensor | float,
    fy: torch.Tensor | float,
    cx: torch.Tensor | float,
    cy: torch.Tensor | float,
    u: torch.Tensor,
    v: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel coordinates (the single ray-generation routine of the project).

    Args:
        c2w: (..., 3|4, 4) pose per ray, or one (3|4, 4) pose broadcast over all rays.
        fx, fy, cx, cy: scalars or tensors broadcastable to ``u``.
        u, v: (...) integer or float pixel indices (column, row); the ray passes through the
            pixel centre (u + 0.5, v + 0.5).
    Returns:
        origins (..., 3) and directions (..., 3), directions with camera-space z = -1.
    """
    u = u.to(torch.float32) + 0.5
    v = v.to(torch.float32) + 0.5
    d_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], dim=-1)
    rot = c2w[..., :3, :3]
    if rot.dim() == 2:
        dirs = d_cam @ rot.T
        origins = c2w[:3, 3].expand_as(dirs)
    else:
        dirs = torch.einsum("...ij,...j->...i", rot, d_cam)
        origins = c2w[..., :3, 3].expand_as(dirs)
    return origins.contiguous(), dirs.contiguous()


def camera_rays(camera: Camera, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All rays of a frame, row-major: origins and directions of shape (H, W, 3)."""
    device = device or camera.c2w.device
    v, u = torch.meshgrid(
        torch.arange(camera.height, device=device), torch.arange(camera.width, device=device), indexing="ij"
    )
    c2w = camera.c2w.to(device=device, dtype=torch.float32)
    return pixel_rays(c2w, camera.fx, camera.fy, camera.cx, camera.cy, u, v)


def sample_pixel_batch(
    n_images: int,
    height: int,
    width: int,
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    precrop: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pixels across many images: (image index, u, v), each of shape (batch,).

    ``precrop < 1`` restricts pixels to the central ``precrop`` fraction of each image (the
    NeRF reference code's ``precrop_frac`` for the first Blender steps).
    """
    img = torch.randint(0, n_images, (batch,), generator=generator, device=device)
    if precrop < 1.0:
        hw, hh = max(1, int(width * precrop / 2)), max(1, int(height * precrop / 2))
        u = torch.randint(width // 2 - hw, width // 2 + hw, (batch,), generator=generator, device=device)
        v = torch.randint(height // 2 - hh, height // 2 + hh, (batch,), generator=generator, device=device)
    else:
        u = torch.randint(0, width, (batch,), generator=generator, device=device)
        v = torch.randint(0, height, (batch,), generator=generator, device=device)
    return img, u, v


def ndc_rays(
    height: int, width: int, focal: float, near: float, origins: torch.Tensor, dirs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map rays of a forward-facing scene into normalised device coordinates.

    Exactly the NeRF reference code's ``ndc_rays`` (Mildenhall et al. 2020, appendix C): the
    origin is first moved onto the plane z = -near, then projected; in NDC the ray runs from
    t = 0 (the near plane) to t = 1 (infinity).
    """
    t = -(near + origins[..., 2]) / dirs[..., 2]
    origins = origins + t[..., None] * dirs
    ox, oy, oz = origins[..., 0], origins[..., 1], origins[..., 2]
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    o0 = -1.0 / (width / (2.0 * focal)) * ox / oz
    o1 = -1.0 / (height / (2.0 * focal)) * oy / oz
    o2 = 1.0 + 2.0 * near / oz
    d0 = -1.0 / (width / (2.0 * focal)) * (dx / dz - ox / oz)
    d1 = -1.0 / (height / (2.0 * focal)) * (dy / dz - oy / oz)
    d2 = -2.0 * near / oz
    return torch.stack([o0, o1, o2], -1), torch.stack([d0, d1, d2], -1)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(4, 4) c2w of a camera at ``eye`` looking at ``target`` (OpenGL convention)."""
    eye, target, up = (torch.as_tensor(x, dtype=torch.float32) for x in (eye, target, up))
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    if right.norm() < 1e-6:  # looking straight along up: pick any perpendicular
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    true_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def look_at_batch(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) c2w of cameras at ``eye`` (N, 3) looking at ``target`` (N, 3) with world ``up`` (3,)."""
    back = torch.nn.functional.normalize(eye - target, dim=-1)
    right = torch.linalg.cross(up.expand_as(back), back)
    alt = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], device=eye.device).expand_as(back), back)
    right = torch.where(right.norm(dim=-1, keepdim=True) < 1e-6, alt, right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, back, eye
    return c2w


def orbit_poses(
    n: int, radius: float, elevation_deg: float, target: torch.Tensor | None = None, up_axis: int = 2
) -> torch.Tensor:
    """(n, 4, 4) poses circling ``target`` at a fixed elevation (for orbit videos and pseudo data)."""
    target = torch.zeros(3) if target is None else torch.as_tensor(target, dtype=torch.float32)
    up = torch.zeros(3)
    up[up_axis] = 1.0
    theta = torch.linspace(0, 2 * torch.pi, n + 1)[:-1]
    el = torch.deg2rad(torch.tensor(elevation_deg))
    a, b = [i for i in range(3) if i != up_axis]
    poses = []
    for th in theta:  # n is a handful of video frames, not rays
        eye = torch.zeros(3)
        eye[a] = radius * torch.cos(el) * torch.cos(th)
        eye[b] = radius * torch.cos(el) * torch.sin(th)
        eye[up_axis] = radius * torch.sin(el)
        poses.append(look_at(eye + target, target, up))
    return torch.stack(poses)


def ray_aabb(
    origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test: entry and exit ``t`` of rays (..., 3) with an axis-aligned box (2, 3).

    Rays that miss the box get t_near > t_far.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far
