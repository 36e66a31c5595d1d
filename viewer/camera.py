"""Interactive orbit camera (pure logic on numpy/pyrr; no Qt, no torch work).

The camera is a pose ``R`` (3x3 rotation whose columns are the camera's right, up and back axes
in world space, OpenGL convention: it looks down -z) plus an orbit ``target`` at ``distance``
in front of it, so ``eye = target + distance * back``. Every gesture edits these three:

- orbit: rotate the pose around the world up axis (yaw) and the camera's right axis (pitch),
  about the target; pitch stops a few degrees short of the poles so the view never flips.
- pan: move eye and target in the image plane, scaled so the point at the target's depth
  follows the mouse pixel for pixel.
- dolly: change the distance to the target (the wheel multiplies it).
- fly (WASD/QE): move eye and target along the view, right and up axes; speed is a fraction of
  the scene size per second.
- snap: take the exact pose and field of view of a dataset camera; the orbit target becomes the
  point on its optical axis nearest to the centre of the scene bounds.

``request`` turns the current view into a ``RenderRequest`` for any output size (square pixels,
centred principal point, vertical field of view ``fov_deg``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyrr
import torch

from models.backends.base import RenderRequest
from models.cameras import Camera

MIN_POLE_ANGLE_DEG = 3.0
"""Orbit pitch stops this far from looking straight along the up axis."""


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def _rotate(axis: np.ndarray, angle: float, v: np.ndarray) -> np.ndarray:
    q = pyrr.quaternion.create_from_axis_rotation(_unit(np.asarray(axis, dtype=np.float64)), angle)
    return pyrr.quaternion.apply_to_vector(q, np.asarray(v, dtype=np.float64))


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) matrix rotating column vectors by ``angle`` radians about ``axis`` (right-handed)."""
    q = pyrr.quaternion.create_from_axis_rotation(_unit(np.asarray(axis, dtype=np.float64)), angle)
    return np.asarray(pyrr.matrix33.create_from_quaternion(q), dtype=np.float64)


def orthonormalize(rot: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (dataset poses may carry a little scale/shear noise)."""
    u, _, vt = np.linalg.svd(np.asarray(rot, dtype=np.float64))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


@dataclass(frozen=True)
class CameraPose:
    """A camera state that can be stored as a keyframe: c2w (4, 4) and vertical field of view."""

    c2w: np.ndarray
    fov_deg: float


def look_at_rotation(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3, 3) camera rotation (columns right, up, back) looking from ``eye`` at ``target``."""
    back = _unit(np.asarray(eye, float) - np.asarray(target, float))
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-6:  # looking along up: pick any perpendicular
        right = np.cross(np.array([0.0, 1.0, 0.0]) if abs(back[1]) < 0.9 else np.array([1.0, 0.0, 0.0]), back)
    right = _unit(right)
    true_up = np.cross(back, right)
    return np.stack([right, true_up, back], axis=1)


class OrbitCamera:
    """Orbit / pan / dolly / fly camera around a target point."""

    def __init__(
        self,
        eye=(0.0, -4.0, 0.0),
        target=(0.0, 0.0, 0.0),
        up=(0.0, 0.0, 1.0),
        fov_deg: float = 50.0,
        scene_radius: float = 1.0,
        dataset_poses: list[CameraPose] | None = None,
    ):
        self.up = _unit(np.asarray(up, dtype=np.float64))
        self.scene_radius = float(scene_radius)
        """Size of the scene (half the bounds' diagonal); sets fly speed and distance limits."""
        self.dataset_poses: list[CameraPose] = list(dataset_poses or [])
        self.dataset_index = -1
        """Index of the dataset camera last snapped to (-1: none)."""
        self.dataset_labels: list[str] = [f"#{i + 1}" for i in range(len(self.dataset_poses))]
        """One name per dataset pose ("test / r_0"), for lists the user picks from."""
        self.orbit_speed = math.radians(0.4)
        """Radians of orbit per pixel of drag."""
        self.fly_speed = 1.0
        """Scene radii per second while a fly key is held."""
        self.zoom_step = 0.9
        """Distance factor per wheel notch (120 units of angleDelta)."""
        self.scene_center = np.asarray(target, dtype=np.float64).copy()
        """Centre of the scene bounds (where snapped views put their orbit target)."""
        self._set_look_at(np.asarray(eye, float), np.asarray(target, float))
        self.fov_deg = float(fov_deg)
        self._home = self.state()

    # ------------------------------------------------------------------------------ creation
    @staticmethod
    def for_scene(scene) -> "OrbitCamera":
        """The initial view of a scene: its first test (else train, else any) camera, orbiting
        the centre of its bounds; without cameras, a view of the whole box from 30 degrees up."""
        aabb = np.asarray(scene.aabb, dtype=np.float64)
        center = aabb.mean(0)
        radius = float(np.linalg.norm(aabb[1] - aabb[0]) / 2)
        up = np.asarray(scene.up, dtype=np.float64)
        cams = dataset_cameras(scene)
        poses = [c.pose() for c in cams]
        cam = OrbitCamera(target=center, up=up, scene_radius=radius, dataset_poses=poses)
        cam.dataset_labels = [c.label for c in cams]
        if poses:
            cam.snap_to(0, center=center)
            cam.dataset_index = -1
        else:
            fov = 50.0
            dist = radius / math.sin(math.radians(fov / 2)) * 1.1
            # a horizontal direction perpendicular to up, then raised 30 degrees
            side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
            side = _unit(np.cross(side, up))
            direction = _unit(math.cos(math.radians(30)) * side + math.sin(math.radians(30)) * up)
            cam._set_look_at(center + dist * direction, center)
            cam.fov_deg = fov
        cam._home = cam.state()
        return cam

    # -------------------------------------------------------------------------------- state
    def _set_look_at(self, eye: np.ndarray, target: np.ndarray) -> None:
        self.rotation = look_at_rotation(eye, target, self.up)
        self.target = np.asarray(target, dtype=np.float64).copy()
        self.distance = max(float(np.linalg.norm(eye - target)), 1e-6)

    @property
    def right(self) -> np.ndarray:
        return self.rotation[:, 0]

    @property
    def cam_up(self) -> np.ndarray:
        return self.rotation[:, 1]

    @property
    def back(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def eye(self) -> np.ndarray:
        return self.target + self.distance * self.back

    def c2w(self) -> np.ndarray:
        """(4, 4) camera-to-world matrix (OpenGL convention)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.eye
        return m

    def pose(self) -> CameraPose:
        return CameraPose(self.c2w(), self.fov_deg)

    def state(self) -> tuple:
        """Everything a gesture can change (for reset and change detection)."""
        return (self.rotation.copy(), self.target.copy(), self.distance, self.fov_deg)

    def set_state(self, state: tuple) -> None:
        rot, target, distance, fov = state
        self.rotation, self.target, self.distance, self.fov_deg = rot.copy(), target.copy(), distance, fov

    def reset(self) -> None:
        """Back to the initial view."""
        self.set_state(self._home)
        self.dataset_index = -1

    def set_pose(self, pose: CameraPose, center: np.ndarray | None = None) -> None:
        """Take a pose exactly; the orbit target goes on its optical axis, nearest ``center``."""
        c2w = np.asarray(pose.c2w, dtype=np.float64)
        eye = c2w[:3, 3].copy()
        self.rotation = orthonormalize(c2w[:3, :3])
        center = self.scene_center if center is None else np.asarray(center, dtype=np.float64)
        depth = float(np.dot(center - eye, -self.back))
        self.distance = max(depth, 0.05 * self.scene_radius, 1e-3)
        self.target = eye - self.distance * self.back
        self.fov_deg = float(pose.fov_deg)

    # ------------------------------------------------------------------------------ gestures
    def orbit(self, dx_pixels: float, dy_pixels: float) -> None:
        """Left-drag: turn the view around the target (drag right = scene turns right)."""
        yaw = -dx_pixels * self.orbit_speed
        pitch = -dy_pixels * self.orbit_speed  # drag down: the camera rises (the scene tips toward you)
        # a positive rotation about the right axis moves the back vector away from up; keep the
        # angle between them inside [3, 177] degrees so the view never goes over a pole
        cos_pole = float(np.clip(np.dot(self.back, self.up), -1.0, 1.0))
        angle = math.acos(cos_pole)  # 0: looking straight down, pi: straight up
        lo, hi = math.radians(MIN_POLE_ANGLE_DEG), math.pi - math.radians(MIN_POLE_ANGLE_DEG)
        new_angle = min(max(angle + pitch, lo), hi)
        pitch = new_angle - angle
        r = _rotation_about(self.up, yaw) @ _rotation_about(self.right, pitch)
        self.rotation = orthonormalize(r @ self.rotation)
        self.dataset_index = -1

    def pan(self, dx_pixels: float, dy_pixels: float, viewport_height: int) -> None:
        """Right/middle-drag: the point at the target's depth follows the mouse."""
        per_pixel = 2.0 * self.distance * math.tan(math.radians(self.fov_deg) / 2) / max(viewport_height, 1)
        self.target = self.target - self.right * dx_pixels * per_pixel + self.cam_up * dy_pixels * per_pixel
        self.dataset_index = -1

    def dolly(self, wheel_notches: float) -> None:
        """Wheel: move toward (positive notches) or away from the target."""
        d = self.distance * self.zoom_step ** wheel_notches
        self.distance = float(np.clip(d, 1e-3 * self.scene_radius, 100.0 * self.scene_radius))
        self.dataset_index = -1

    def fly(self, forward: float, right: float, up: float, seconds: float) -> None:
        """WASD/QE: translate eye and target; arguments are -1/0/+1 key states."""
        step = self.fly_speed * self.scene_radius * seconds
        delta = (-self.back * forward + self.right * right + self.cam_up * up) * step
        self.target = self.target + delta
        self.dataset_index = -1

    def set_fov(self, fov_deg: float) -> None:
        self.fov_deg = float(np.clip(fov_deg, 5.0, 150.0))

    def snap_to(self, index: int, center: np.ndarray | None = None) -> bool:
        """Jump to dataset camera ``index`` (wrapping); False when the scene has none."""
        if not self.dataset_poses:
            return False
        self.dataset_index = index % len(self.dataset_poses)
        self.set_pose(self.dataset_poses[self.dataset_index], center)
        return True

    def snap_next(self, step: int = 1) -> bool:
        """] / [: the next / previous dataset camera."""
        if self.dataset_index < 0:
            start = 0 if step > 0 else -1
            return self.snap_to(start)
        return self.snap_to(self.dataset_index + step)

    # ------------------------------------------------------------------------------- output
    def intrinsics(self, width: int, height: int) -> tuple[float, float, float, float]:
        fy = 0.5 * height / math.tan(math.radians(self.fov_deg) / 2)
        return fy, fy, width / 2.0, height / 2.0

    def request(self, width: int, height: int, near: float, far: float, **kw) -> RenderRequest:
        """A RenderRequest of the current view at ``width x height`` pixels."""
        return request_for_pose(self.pose(), width, height, near, far, **kw)


def ordered_splits(cameras: dict) -> list[str]:
    """Camera splits in the order [ ] walks them: test, train, val, then any other."""
    order = [s for s in ("test", "train", "val") if s in cameras]
    return order + sorted(s for s in cameras if s not in order)


@dataclass(frozen=True)
class DatasetCamera:
    """One camera of a scene's dataset, as listed in its manifest: where it comes from plus the
    pinhole camera itself."""

    split: str
    name: str
    """Image name recorded in scene.json (its index in the split when the manifest has none)."""
    camera: Camera
    """Intrinsics in pixels and the (4, 4) OpenGL c2w, a float64 CPU tensor."""

    @property
    def label(self) -> str:
        """``split / name``, the name without a repeated split folder or an image extension."""
        name = self.name.removeprefix(f"{self.split}/")
        stem, dot, ext = name.rpartition(".")
        if dot and ext.lower() in ("png", "jpg", "jpeg", "exr", "webp"):
            name = stem
        return f"{self.split} / {name}"

    def pose(self) -> CameraPose:
        """The camera's pose and vertical field of view (c2w as a float64 array sharing its memory)."""
        cam = self.camera
        return CameraPose(cam.c2w.numpy(), math.degrees(2 * math.atan(0.5 * cam.height / cam.fy)))


def dataset_cameras(scene) -> list[DatasetCamera]:
    """The scene's dataset cameras in ``ordered_splits`` order (the order [ ] walks and lists show)."""
    out = []
    for split in ordered_splits(scene.cameras):
        for i, c in enumerate(scene.cameras[split]):
            c2w = np.asarray(c["c2w"], dtype=np.float64)
            if c2w.shape == (3, 4):
                c2w = np.vstack([c2w, [0, 0, 0, 1]])
            w, h = int(c["width"]), int(c["height"])
            cam = Camera(torch.from_numpy(c2w), w, h, float(c["fx"]), float(c["fy"]),
                         float(c.get("cx", w / 2.0)), float(c.get("cy", h / 2.0)))
            out.append(DatasetCamera(split, str(c.get("name", i)), cam))
    return out


# ------------------------------------------------------------------------------ camera paths
def interpolate_poses(keyframes: list[CameraPose], n_frames: int) -> list[CameraPose]:
    """``n_frames`` poses through the keyframes: positions on a Catmull-Rom spline, rotations by
    slerp, field of view linear; the first and last frames are the first and last keyframes."""
    if not keyframes:
        raise ValueError("no keyframes recorded")
    if len(keyframes) == 1 or n_frames == 1:
        return [keyframes[0]] * n_frames
    pos = [np.asarray(k.c2w, float)[:3, 3] for k in keyframes]
    quats = [pyrr.quaternion.create_from_matrix(orthonormalize(np.asarray(k.c2w, float)[:3, :3])) for k in keyframes]
    for i in range(1, len(quats)):  # shortest arcs
        if np.dot(quats[i], quats[i - 1]) < 0:
            quats[i] = -quats[i]
    segs = len(keyframes) - 1
    out = []
    for f in range(n_frames):
        s = f / (n_frames - 1) * segs
        i = min(int(s), segs - 1)
        t = s - i
        p0, p1, p2, p3 = pos[max(i - 1, 0)], pos[i], pos[i + 1], pos[min(i + 2, segs)]
        p = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                   + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
        q = pyrr.quaternion.slerp(quats[i], quats[i + 1], t)
        m = np.eye(4)
        m[:3, :3] = pyrr.matrix33.create_from_quaternion(pyrr.quaternion.normalize(q))
        m[:3, 3] = p
        fov = (1 - t) * keyframes[i].fov_deg + t * keyframes[i + 1].fov_deg
        out.append(CameraPose(m, fov))
    return out


def orbit_path(camera: OrbitCamera, n_frames: int, turns: float = 1.0) -> list[CameraPose]:
    """A full turn around the camera's target about the up axis, starting from the current view."""
    start = camera.state()
    poses = []
    for f in range(n_frames):
        angle = 2 * math.pi * turns * f / n_frames
        camera.set_state(start)
        camera.rotation = _rotation_about(camera.up, angle) @ camera.rotation
        poses.append(camera.pose())
    camera.set_state(start)
    return poses


def view_bounds(scene, eye) -> tuple[float, float]:
    """Near and far for a camera at ``eye``: the scene's bounds, moved with the camera's distance
    from the scene centre relative to the dataset cameras' mean distance. At the dataset cameras'
    distance they are exactly the bounds the backends were trained with; zoomed out by D they
    cover the same slab of space D further away (nothing is clipped); zoomed in, near stops just
    in front of the camera. NDC scenes keep their bounds."""
    if getattr(scene, "ndc", None) is not None:
        return float(scene.near), float(scene.far)
    aabb = np.asarray(scene.aabb, dtype=np.float64)
    centre = aabb.mean(0)
    eyes = [np.asarray(c["c2w"], dtype=np.float64)[:3, 3] for cams in scene.cameras.values() for c in cams]
    ref = (float(np.mean([np.linalg.norm(e - centre) for e in eyes])) if eyes
           else 0.5 * (float(scene.near) + float(scene.far)))
    shift = float(np.linalg.norm(np.asarray(eye, dtype=np.float64) - centre)) - ref
    radius = float(np.linalg.norm(aabb[1] - aabb[0]) / 2)
    near = max(float(scene.near) + shift, 1e-3 * max(radius, 1e-6))
    far = max(float(scene.far) + shift, near + 1e-3)
    return near, far


def request_for_pose(pose: CameraPose, width: int, height: int, near: float, far: float, **kw) -> RenderRequest:
    """A RenderRequest of a stored pose (keyframe, path frame) at ``width x height`` pixels."""
    fy = 0.5 * height / math.tan(math.radians(pose.fov_deg) / 2)
    c2w = tuple(tuple(float(x) for x in row) for row in np.asarray(pose.c2w, dtype=np.float64))
    return RenderRequest(c2w, int(width), int(height), fy, fy, width / 2.0, height / 2.0, float(near), float(far), **kw)
