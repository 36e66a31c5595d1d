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
from models.scene import manifest_camera

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
    def for_scene(scene) -> OrbitCamera:
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
            out.append(DatasetCamera(split, str(c.get("name", i)), manifest_camera(c, torch.float64)))
    return out


# ------------------------------------------------------------------------------ camera paths
# Unit quaternions here are numpy arrays (w, x, y, z) of rotations of column vectors.
def quaternion_from_matrix(rot: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) of a (3, 3) rotation matrix (Shepperd's method)."""
    r = np.asarray(rot, dtype=np.float64)
    tr = r[0, 0] + r[1, 1] + r[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (w, x, y, z); normalised first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def _qconj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def _qlog(q: np.ndarray) -> np.ndarray:
    """(3,) log of a unit quaternion: half the rotation angle times the axis."""
    v = q[1:]
    s = float(np.linalg.norm(v))
    if s < 1e-12:
        return np.zeros(3)
    return math.atan2(s, float(q[0])) * v / s


def _qexp(v: np.ndarray) -> np.ndarray:
    """Unit quaternion exp((0, v)), the inverse of ``_qlog``."""
    a = float(np.linalg.norm(v))
    if a < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    return np.array([math.cos(a), *(math.sin(a) * np.asarray(v) / a)])


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Constant-speed arc from ``a`` (t = 0) to ``b`` (t = 1); the caller picks the hemisphere."""
    q = _qmul(a, _qexp(t * _qlog(_qmul(_qconj(a), b))))
    return q / np.linalg.norm(q)


def _hermite(p1, p2, m1, m2, t: float):
    """Cubic Hermite from ``p1`` (tangent ``m1``) at t = 0 to ``p2`` (tangent ``m2``) at t = 1."""
    t2, t3 = t * t, t * t * t
    return (2 * t3 - 3 * t2 + 1) * p1 + (t3 - 2 * t2 + t) * m1 + (-2 * t3 + 3 * t2) * p2 + (t3 - t2) * m2


class PoseSpline:
    """A camera path through keyframes, keyframe ``i`` at parameter ``s = i``.

    ``smoothness`` blends two interpolations (0 <= smoothness <= 1):

    - 0, linear: positions and field of view move along straight segments at constant speed
      between consecutive keyframes, rotations by slerp (constant angular speed); the motion
      changes direction and speed abruptly at each keyframe.
    - 1, smooth: positions and field of view on a uniform Catmull-Rom spline (Hermite segments
      with tangents (p[i+1] - p[i-1]) / 2, the end keyframes repeated), rotations on the matching
      spherical spline (Shoemake's squad, control points from the same neighbours), so velocity
      and angular velocity are continuous through the keyframes.

    In between, each segment's tangents (and the squad control points' offsets) are scaled
    between the two, so the path bends continuously from one to the other. Every path passes
    exactly through its keyframes: at an integer ``s`` the keyframe itself is returned.
    """

    def __init__(self, keyframes, smoothness: float = 1.0):
        if not keyframes:
            raise ValueError("no keyframes recorded")
        self.keyframes = list(keyframes)
        self.smoothness = float(np.clip(smoothness, 0.0, 1.0))
        n = len(self.keyframes)
        self.positions = [np.asarray(k.c2w, np.float64)[:3, 3] for k in self.keyframes]
        self.fovs = [float(k.fov_deg) for k in self.keyframes]
        quats = [quaternion_from_matrix(orthonormalize(np.asarray(k.c2w, np.float64)[:3, :3])) for k in self.keyframes]
        for i in range(1, n):  # consecutive quaternions in one hemisphere: every segment the short way
            if np.dot(quats[i], quats[i - 1]) < 0:
                quats[i] = -quats[i]
        self.quats = quats
        # squad control points a_i = q_i exp(-(log(q_i^-1 q_i+1) + log(q_i^-1 q_i-1)) / 4), offsets
        # scaled by the smoothness (0: a_i = q_i and squad is slerp)
        self.controls = []
        for i, q in enumerate(quats):
            prev, nxt = quats[max(i - 1, 0)], quats[min(i + 1, n - 1)]
            offset = _qlog(_qmul(_qconj(q), nxt)) + _qlog(_qmul(_qconj(q), prev))
            a = _qmul(q, _qexp(-self.smoothness * offset / 4))
            self.controls.append(a / np.linalg.norm(a))

    @property
    def segments(self) -> int:
        return len(self.keyframes) - 1

    def _tangents(self, values, i: int):
        """Start and end tangents of segment ``i`` (from keyframe i to i + 1)."""
        n, s = len(values), self.smoothness
        p0, p1, p2, p3 = values[max(i - 1, 0)], values[i], values[i + 1], values[min(i + 2, n - 1)]
        chord = p2 - p1
        return (1 - s) * chord + s * (p2 - p0) / 2, (1 - s) * chord + s * (p3 - p1) / 2

    def at(self, s: float) -> CameraPose:
        """The pose at parameter ``s`` in [0, len(keyframes) - 1] (clamped)."""
        segs = self.segments
        s = min(max(float(s), 0.0), float(segs))
        k = round(s)
        if abs(s - k) < 1e-9:  # at a keyframe: exactly the keyframe
            pose = self.keyframes[k]
            return CameraPose(np.array(pose.c2w, dtype=np.float64), float(pose.fov_deg))
        i = min(int(s), segs - 1)
        t = s - i
        m1, m2 = self._tangents(self.positions, i)
        pos = _hermite(self.positions[i], self.positions[i + 1], m1, m2, t)
        f1, f2 = self._tangents(np.asarray(self.fovs), i)
        fov = float(np.clip(_hermite(self.fovs[i], self.fovs[i + 1], f1, f2, t), 1.0, 179.0))
        q1, q2 = self.quats[i], self.quats[i + 1]
        q = _slerp(_slerp(q1, q2, t), _slerp(self.controls[i], self.controls[i + 1], t), 2 * t * (1 - t))
        m = np.eye(4)
        m[:3, :3] = matrix_from_quaternion(q)
        m[:3, 3] = pos
        return CameraPose(m, fov)

    def sample(self, n_frames: int) -> list[CameraPose]:
        """``n_frames`` poses evenly spaced in ``s``: the first and last are the end keyframes."""
        if n_frames < 1:
            raise ValueError(f"a camera path needs at least one frame, not {n_frames}")
        if n_frames == 1 or self.segments == 0:
            return [self.at(0.0) for _ in range(n_frames)]
        # f * segs / (n - 1) is an exact integer wherever a frame falls on a keyframe
        return [self.at(f * self.segments / (n_frames - 1)) for f in range(n_frames)]


def interpolate_poses(keyframes: list[CameraPose], n_frames: int, smoothness: float = 1.0) -> list[CameraPose]:
    """``n_frames`` poses through the keyframes (``PoseSpline``; smoothness 1: Catmull-Rom
    positions and field of view, squad rotations); the first and last frames are the first and
    last keyframes."""
    return PoseSpline(keyframes, smoothness).sample(n_frames)


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
