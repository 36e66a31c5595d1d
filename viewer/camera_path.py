"""The camera path the viewer records, previews and renders (pure logic on numpy; no Qt).

A ``CameraPath`` is an ordered list of keyframes (``CameraPose``: c2w and vertical field of
view), a duration in seconds and a smoothness in [0, 1] (``viewer.camera.PoseSpline``: 0 moves
along straight segments, 1 along a Catmull-Rom spline). Keyframes are spaced evenly in time:
keyframe ``i`` of ``n`` is reached at ``i / (n - 1) * duration``. ``pose_at(t)`` is the one
function both the viewport preview and the exported video frames (``poses(n_frames)``) come from.

Views that show the path subscribe to it (``subscribe``) and are called after every change,
whoever made it (the K key, the camera-path panel, loading a file).

Saved as JSON (``to_json`` / ``save``, written atomically)::

    {"format": "nsv-camera-path", "version": 1, "duration": 4.0, "smoothness": 1.0,
     "scene": "lego",                                  # informative, optional
     "keyframes": [{"c2w": [[...], [...], [...], [0, 0, 0, 1]], "fov_deg": 50.0}, ...]}

``from_json`` / ``load`` refuse anything else with a ``CameraPathError`` saying what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from models.storage import StorageError, read_json, write_json
from viewer.camera import CameraPose, PoseSpline, orthonormalize

FORMAT = "nsv-camera-path"
"""The ``format`` field of a saved camera path."""
VERSION = 1
"""The newest file version this code reads and the one it writes."""
DEFAULT_DURATION = 4.0
"""Seconds a new path takes."""
MAX_DURATION = 3600.0
"""Longest path (seconds)."""
MAX_KEYFRAMES = 10_000
"""Most keyframes a file may hold."""
MIN_FPS, MAX_FPS = 1, 240


class CameraPathError(ValueError):
    """A camera path file or value that cannot be used; the message says why."""


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CameraPathError(f"{what} must be a number, not {type(value).__name__} {value!r}"[:200])
    v = float(value)
    if not math.isfinite(v):
        raise CameraPathError(f"{what} must be finite, not {v}")
    return v


def check_duration(seconds) -> float:
    """``seconds`` as a valid path duration (0 < seconds <= MAX_DURATION), else CameraPathError."""
    v = _number(seconds, "The duration")
    if not 0.0 < v <= MAX_DURATION:
        raise CameraPathError(f"The duration must be above 0 and at most {MAX_DURATION:g} seconds, not {v:g}")
    return v


def check_smoothness(value) -> float:
    """``value`` as a valid smoothness (0 <= value <= 1), else CameraPathError."""
    v = _number(value, "The smoothness")
    if not 0.0 <= v <= 1.0:
        raise CameraPathError(f"The smoothness must be between 0 and 1, not {v:g}")
    return v


def check_pose(pose: CameraPose, what: str = "A keyframe") -> CameraPose:
    """A copy of ``pose`` with a float64 (4, 4) c2w whose rotation is exactly orthonormal;
    CameraPathError when it is not a finite rigid camera pose with a usable field of view."""
    try:
        m = np.array(pose.c2w, dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraPathError(f"{what}: c2w must be a 4x4 (or 3x4) matrix of numbers") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise CameraPathError(f"{what}: c2w must be a 4x4 (or 3x4) matrix, not {'x'.join(map(str, m.shape))}")
    if not np.isfinite(m).all():
        raise CameraPathError(f"{what}: c2w holds a value that is not finite")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise CameraPathError(f"{what}: the last row of c2w must be 0 0 0 1")
    rot = m[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
        raise CameraPathError(f"{what}: the rotation part of c2w is not a rotation (scaled, sheared or mirrored)")
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-12:  # float noise of a file: the nearest rotation
        m[:3, :3] = orthonormalize(rot)
    fov = _number(pose.fov_deg, f"{what}: fov_deg")
    if not 1.0 <= fov <= 179.0:
        raise CameraPathError(f"{what}: fov_deg must be between 1 and 179 degrees, not {fov:g}")
    return CameraPose(m, fov)


def pose_summary(pose: CameraPose, center, up) -> tuple[float, float, float]:
    """Azimuth and elevation (degrees) and distance of the pose's eye seen from ``center``.

    Elevation is the angle above the plane perpendicular to ``up``; azimuth is measured in that
    plane, counter-clockwise seen from above, from the world axis least aligned with ``up``
    (x for a z-up scene)."""
    up = np.asarray(up, dtype=np.float64)
    up = up / max(float(np.linalg.norm(up)), 1e-12)
    d = np.asarray(pose.c2w, dtype=np.float64)[:3, 3] - np.asarray(center, dtype=np.float64)
    dist = float(np.linalg.norm(d))
    if dist < 1e-12:
        return 0.0, 0.0, 0.0
    ref = np.eye(3)[int(np.argmin(np.abs(up)))]
    ref = ref - np.dot(ref, up) * up
    ref /= np.linalg.norm(ref)
    side = np.cross(up, ref)
    elevation = math.degrees(math.asin(float(np.clip(np.dot(d, up) / dist, -1.0, 1.0))))
    azimuth = math.degrees(math.atan2(float(np.dot(d, side)), float(np.dot(d, ref))))
    return azimuth, elevation, dist


class CameraPath:
    """Keyframes in order, a duration and a smoothness; see the module docstring."""

    def __init__(self, keyframes: Iterable[CameraPose] = (), duration: float = DEFAULT_DURATION,
                 smoothness: float = 1.0):
        self._keyframes: list[CameraPose] = [check_pose(k, f"Keyframe {i + 1}") for i, k in enumerate(keyframes)]
        self._duration = check_duration(duration)
        self._smoothness = check_smoothness(smoothness)
        self._listeners: list[Callable[[], None]] = []
        self._spline: PoseSpline | None = None

    # ------------------------------------------------------------------------------ reading
    @property
    def keyframes(self) -> tuple[CameraPose, ...]:
        """The keyframes in path order (edit them through the methods, so views follow)."""
        return tuple(self._keyframes)

    @property
    def duration(self) -> float:
        """Seconds from the first keyframe to the last."""
        return self._duration

    @property
    def smoothness(self) -> float:
        """0: straight segments at constant speed; 1: Catmull-Rom spline (``PoseSpline``)."""
        return self._smoothness

    def __len__(self) -> int:
        return len(self._keyframes)

    def __getitem__(self, index: int) -> CameraPose:
        return self._keyframes[index]

    def keyframe_time(self, index: int) -> float:
        """Seconds into the path at which keyframe ``index`` is reached."""
        n = len(self._keyframes)
        if not 0 <= index < n:
            raise IndexError(f"keyframe {index} of {n}")
        return 0.0 if n == 1 else index / (n - 1) * self._duration

    def frame_count(self, fps: float) -> int:
        """Frames of a video of the path at ``fps`` frames per second (at least 2)."""
        fps = _number(fps, "The frame rate")
        if not MIN_FPS <= fps <= MAX_FPS:
            raise CameraPathError(f"The frame rate must be {MIN_FPS} to {MAX_FPS} frames per second, not {fps:g}")
        return max(2, round(self._duration * fps))

    # ---------------------------------------------------------------------------- sampling
    def _curve(self) -> PoseSpline:
        if not self._keyframes:
            raise CameraPathError("The camera path has no keyframes")
        if self._spline is None:
            self._spline = PoseSpline(self._keyframes, self._smoothness)
        return self._spline

    def pose_at(self, seconds: float) -> CameraPose:
        """The pose ``seconds`` into the path (clamped to [0, duration]); exactly keyframe ``i``
        at ``keyframe_time(i)``."""
        curve = self._curve()
        u = min(max(float(seconds) / self._duration, 0.0), 1.0)
        return curve.at(u * curve.segments)

    def poses(self, n_frames: int) -> list[CameraPose]:
        """``n_frames`` poses at evenly spaced times from 0 to ``duration`` (the video's frames):
        the first and last are the first and last keyframes."""
        return self._curve().sample(int(n_frames))

    # ---------------------------------------------------------------------------- editing
    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change to the path."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        self._spline = None
        for callback in list(self._listeners):
            callback()

    def _index(self, index: int, allow_end: bool = False) -> int:
        n = len(self._keyframes)
        if not (0 <= index < n or (allow_end and index == n)):
            raise IndexError(f"keyframe {index} of {n}")
        return index

    def append(self, pose: CameraPose) -> int:
        """Add ``pose`` at the end; returns its index."""
        return self.insert(len(self._keyframes), pose)

    def insert(self, index: int, pose: CameraPose) -> int:
        """Insert ``pose`` before keyframe ``index`` (``len(path)``: at the end); returns ``index``."""
        self._keyframes.insert(self._index(index, allow_end=True), check_pose(pose))
        self._changed()
        return index

    def replace(self, index: int, pose: CameraPose) -> None:
        """Keyframe ``index`` becomes ``pose``."""
        self._keyframes[self._index(index)] = check_pose(pose)
        self._changed()

    def remove(self, index: int) -> CameraPose:
        """Delete keyframe ``index`` and return it."""
        pose = self._keyframes.pop(self._index(index))
        self._changed()
        return pose

    def move(self, index: int, to: int) -> None:
        """Move keyframe ``index`` so that it ends up at index ``to`` (the others keep their order)."""
        pose = self._keyframes.pop(self._index(index))
        self._keyframes.insert(min(max(int(to), 0), len(self._keyframes)), pose)
        self._changed()

    def reorder(self, order: Iterable[int]) -> None:
        """New order: ``order[j]`` is the index of the keyframe that becomes keyframe ``j``
        (a permutation of ``range(len(path))``)."""
        order = [int(i) for i in order]
        if sorted(order) != list(range(len(self._keyframes))):
            raise ValueError(f"{order} is not a permutation of the {len(self._keyframes)} keyframes")
        self._keyframes = [self._keyframes[i] for i in order]
        self._changed()

    def clear(self) -> None:
        """Remove every keyframe (duration and smoothness stay)."""
        self._keyframes.clear()
        self._changed()

    def set_duration(self, seconds: float) -> None:
        self._duration = check_duration(seconds)
        self._changed()

    def set_smoothness(self, value: float) -> None:
        self._smoothness = check_smoothness(value)
        self._changed()

    def assign(self, other: CameraPath) -> None:
        """Take ``other``'s keyframes, duration and smoothness (a loaded file); subscribers stay."""
        self._keyframes = list(other._keyframes)
        self._duration, self._smoothness = other._duration, other._smoothness
        self._changed()

    # ---------------------------------------------------------------------------- files
    def to_json(self, scene: str | None = None) -> dict:
        """The path as the JSON object ``save`` writes (``scene``: a name kept for information)."""
        data = {"format": FORMAT, "version": VERSION, "duration": self._duration, "smoothness": self._smoothness}
        if scene:
            data["scene"] = str(scene)
        data["keyframes"] = [{"c2w": np.asarray(k.c2w, dtype=np.float64).tolist(), "fov_deg": float(k.fov_deg)}
                             for k in self._keyframes]
        return data

    @classmethod
    def from_json(cls, data) -> CameraPath:
        """A path from the object ``to_json`` returns; CameraPathError naming the problem otherwise."""
        if not isinstance(data, dict):
            raise CameraPathError(f"A camera path file holds a JSON object, not {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise CameraPathError(f'Not a camera path file (its "format" is {data.get("format")!r}, '
                                  f'not "{FORMAT}")'[:300])
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CameraPathError(f'"version" must be a whole number from 1, not {version!r}'[:200])
        if version > VERSION:
            raise CameraPathError(f"The file is camera path version {version}, written by a newer viewer "
                                  f"(this one reads up to version {VERSION})")
        frames = data.get("keyframes")
        if not isinstance(frames, list):
            raise CameraPathError('"keyframes" must be a list of {"c2w": 4x4, "fov_deg": number} objects')
        if not frames:
            raise CameraPathError("The camera path has no keyframes")
        if len(frames) > MAX_KEYFRAMES:
            raise CameraPathError(f"The camera path has {len(frames)} keyframes, more than {MAX_KEYFRAMES}")
        poses = []
        for i, k in enumerate(frames):
            what = f"Keyframe {i + 1}"
            if not isinstance(k, dict) or "c2w" not in k or "fov_deg" not in k:
                raise CameraPathError(f'{what} must be an object with "c2w" and "fov_deg"')
            c2w = k["c2w"]
            if not (isinstance(c2w, list) and all(isinstance(row, list) for row in c2w)
                    and all(not isinstance(x, bool) and isinstance(x, (int, float)) for row in c2w for x in row)):
                raise CameraPathError(f"{what}: c2w must be a 4x4 (or 3x4) matrix of numbers")
            poses.append(check_pose(CameraPose(c2w, k["fov_deg"]), what))
        return cls(poses, check_duration(data.get("duration", DEFAULT_DURATION)),
                   check_smoothness(data.get("smoothness", 1.0)))

    def save(self, path: str | Path, scene: str | None = None) -> None:
        """Write the path as JSON, atomically; CameraPathError when it cannot be written."""
        if not self._keyframes:
            raise CameraPathError("The camera path has no keyframes to save")
        try:
            write_json(Path(path), self.to_json(scene))
        except StorageError as e:
            raise CameraPathError(str(e)) from None

    @classmethod
    def load(cls, path: str | Path) -> CameraPath:
        """Read a path written by ``save``; CameraPathError (naming the file) when it cannot be used."""
        path = Path(path)
        try:
            data = read_json(path)
        except StorageError as e:
            raise CameraPathError(str(e)) from None
        try:
            return cls.from_json(data)
        except CameraPathError as e:
            raise CameraPathError(f"{path}: {e}") from None
