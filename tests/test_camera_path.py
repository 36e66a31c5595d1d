"""The camera path model (viewer/camera_path.py) and its spline (viewer.camera.PoseSpline), no Qt:
editing, interpolation through the keyframes, linear vs smooth, duration and frames, JSON files."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from viewer.camera import (
    CameraPose,
    PoseSpline,
    interpolate_poses,
    look_at_rotation,
    matrix_from_quaternion,
    quaternion_from_matrix,
)
from viewer.camera_path import FORMAT, CameraPath, CameraPathError, pose_summary


def _key(eye, fov=50.0, target=(0.0, 0.0, 0.0)) -> CameraPose:
    """A float64 keyframe at ``eye`` looking at ``target`` (z up), as OrbitCamera.pose() makes them."""
    c2w = np.eye(4)
    c2w[:3, :3] = look_at_rotation(np.asarray(eye, float), np.asarray(target, float), np.array([0.0, 0.0, 1.0]))
    c2w[:3, 3] = eye
    return CameraPose(c2w, fov)


def _keys():
    """Four keyframes around the origin at different heights and fields of view."""
    return [_key([4.0, 0, 0], 40.0), _key([0, 4.0, 1.0], 60.0), _key([-4.0, 0, 2.0], 50.0), _key([0, -4.0, 0.5], 45.0)]


def _is_rotation(r) -> bool:
    return np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)


def test_edits_keep_the_order_and_tell_subscribers():
    keys = _keys()
    path = CameraPath(keys[:3])
    calls = []
    path.subscribe(lambda: calls.append(len(path)))
    eyes = lambda: [tuple(np.round(k.c2w[:3, 3], 6)) for k in path.keyframes]
    e = [tuple(np.round(k.c2w[:3, 3], 6)) for k in keys]

    path.append(keys[3])
    assert eyes() == [e[0], e[1], e[2], e[3]]
    path.move(3, 0)  # the last becomes the first
    assert eyes() == [e[3], e[0], e[1], e[2]]
    path.reorder([1, 2, 3, 0])  # back: new keyframe j is old keyframe order[j]
    assert eyes() == e
    path.move(0, 2)
    assert eyes() == [e[1], e[2], e[0], e[3]]
    removed = path.remove(2)
    assert tuple(np.round(removed.c2w[:3, 3], 6)) == e[0] and eyes() == [e[1], e[2], e[3]]
    path.insert(0, keys[0])
    assert eyes() == [e[0], e[1], e[2], e[3]]
    path.replace(1, keys[3])
    assert eyes() == [e[0], e[3], e[2], e[3]]
    assert calls == [4, 4, 4, 4, 3, 4, 4]  # one call per change
    path.clear()
    assert len(path) == 0 and calls[-1] == 0
    assert path.duration == 4.0  # clearing keeps the timing

    with pytest.raises(ValueError, match="permutation"):
        CameraPath(keys).reorder([0, 0, 1, 2])
    with pytest.raises(IndexError):
        CameraPath(keys).remove(4)
    with pytest.raises(CameraPathError, match="rotation"):  # a scaled rotation is not a camera pose
        path.append(CameraPose(np.diag([2.0, 1.0, 1.0, 1.0]), 50.0))


@pytest.mark.parametrize("smoothness", [0.0, 0.5, 1.0])
def test_the_path_passes_exactly_through_its_keyframes(smoothness):
    keys = _keys()
    path = CameraPath(keys, duration=3.0, smoothness=smoothness)
    for i, k in enumerate(keys):
        assert path.keyframe_time(i) == pytest.approx(i * 1.0)
        np.testing.assert_array_equal(path.pose_at(path.keyframe_time(i)).c2w, k.c2w)
        assert path.pose_at(path.keyframe_time(i)).fov_deg == k.fov_deg
    # 31 frames over 3 segments: frames 0, 10, 20 and 30 are the keyframes, bit for bit
    frames = path.poses(31)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(frames[10 * i].c2w, k.c2w)
    for f in frames:
        assert _is_rotation(f.c2w[:3, :3])
    # times outside [0, duration] stay at the ends
    np.testing.assert_array_equal(path.pose_at(-1.0).c2w, keys[0].c2w)
    np.testing.assert_array_equal(path.pose_at(99.0).c2w, keys[-1].c2w)


def test_linear_moves_along_straight_segments_at_constant_speed():
    keys = _keys()
    path = CameraPath(keys, duration=3.0, smoothness=0.0)
    for t in (0.25, 0.5, 0.9):  # within segment 1 (keyframe 1 to 2), seconds 1 to 2
        p = path.pose_at(1.0 + t)
        a, b = keys[1].c2w[:3, 3], keys[2].c2w[:3, 3]
        np.testing.assert_allclose(p.c2w[:3, 3], (1 - t) * a + t * b, atol=1e-12)
        assert p.fov_deg == pytest.approx((1 - t) * keys[1].fov_deg + t * keys[2].fov_deg)
        # the rotation turns at constant angular speed: angle(R1, R(t)) = t * angle(R1, R2)
        rel = lambda x, y: math.acos(np.clip((np.trace(x.T @ y) - 1) / 2, -1, 1))
        r1, r2 = keys[1].c2w[:3, :3], keys[2].c2w[:3, :3]
        assert rel(r1, p.c2w[:3, :3]) == pytest.approx(t * rel(r1, r2), rel=1e-9)


def test_smooth_is_catmull_rom_and_continuous_through_keyframes():
    keys = _keys()
    pos = [k.c2w[:3, 3] for k in keys]
    path = CameraPath(keys, duration=3.0, smoothness=1.0)
    # uniform Catmull-Rom at the middle of segment 1: (-p0 + 9 p1 + 9 p2 - p3) / 16
    np.testing.assert_allclose(path.pose_at(1.5).c2w[:3, 3], (-pos[0] + 9 * pos[1] + 9 * pos[2] - pos[3]) / 16,
                               atol=1e-12)
    # it leaves the chord, the linear path does not
    lin = CameraPath(keys, duration=3.0, smoothness=0.0)
    assert np.linalg.norm(path.pose_at(1.5).c2w[:3, 3] - lin.pose_at(1.5).c2w[:3, 3]) > 0.1

    # at keyframe 1 (t = 1 s): smooth velocities (position and rotation) agree on both sides;
    # linear ones jump
    for p, continuous in ((path, True), (lin, False)):
        before = (p.pose_at(1.0).c2w - p.pose_at(1.0 - 1e-5).c2w) / 1e-5
        after = (p.pose_at(1.0 + 1e-5).c2w - p.pose_at(1.0).c2w) / 1e-5
        jump = np.abs(after - before).max()
        assert (jump < 1e-3) if continuous else (jump > 0.1), (continuous, jump)


def test_smoothness_bends_the_path_continuously():
    keys = _keys()
    mids = [CameraPath(keys, 3.0, s).pose_at(1.5).c2w for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    steps = [np.abs(b - a).max() for a, b in itertools.pairwise(mids)]
    assert all(s > 1e-3 for s in steps)  # every step bends it further ...
    assert max(steps) < 3 * min(steps)  # ... by similar amounts (no jump between settings)


def test_duration_sets_times_and_frame_count():
    path = CameraPath(_keys()[:3], duration=2.0)
    assert [path.keyframe_time(i) for i in range(3)] == [0.0, 1.0, 2.0]
    assert path.frame_count(30) == 60
    path.set_duration(4.5)
    assert path.frame_count(30) == 135 and path.frame_count(24) == 108
    assert path.keyframe_time(2) == 4.5
    np.testing.assert_array_equal(path.pose_at(2.25).c2w, path[1].c2w)  # the middle keyframe at half-time
    assert len(path.poses(path.frame_count(24))) == 108
    path.set_duration(0.01)
    assert path.frame_count(30) == 2  # a video has at least its two ends
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e9, "4"):
        with pytest.raises(CameraPathError):
            path.set_duration(bad)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(CameraPathError):
            path.set_smoothness(bad)
    with pytest.raises(CameraPathError, match="frame rate"):
        path.frame_count(0)
    with pytest.raises(CameraPathError, match="no keyframes"):
        CameraPath().pose_at(0.0)
    single = CameraPath([_keys()[0]])
    assert single.keyframe_time(0) == 0.0
    np.testing.assert_array_equal(single.poses(3)[2].c2w, single[0].c2w)


def test_preview_and_video_sample_the_same_function():
    path = CameraPath(_keys(), duration=2.0, smoothness=0.7)
    frames = path.poses(9)
    for f, pose in enumerate(frames):
        np.testing.assert_allclose(pose.c2w, path.pose_at(f / 8 * 2.0).c2w, atol=1e-12)
    legacy = interpolate_poses(list(path.keyframes), 9, smoothness=0.7)
    for a, b in zip(frames, legacy):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-12)


def test_quaternions_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        r = matrix_from_quaternion(q)
        assert _is_rotation(r)
        np.testing.assert_allclose(matrix_from_quaternion(quaternion_from_matrix(r)), r, atol=1e-12)
    # a half turn (trace -1) is handled by the other branches of Shepperd's method
    for r in (np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])):
        np.testing.assert_allclose(matrix_from_quaternion(quaternion_from_matrix(r)), r, atol=1e-12)
    with pytest.raises(ValueError):
        PoseSpline([])


def test_pose_summary():
    az, el, d = pose_summary(_key([0.0, 3.0, 3.0]), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    assert (az, el, d) == pytest.approx((90.0, 45.0, math.sqrt(18)))
    az, el, d = pose_summary(_key([-2.0, 0.0, 1.0]), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0))
    assert (az, el, d) == pytest.approx((180.0, 0.0, 2.0))


def test_json_round_trip(tmp_path):
    path = CameraPath(_keys(), duration=6.5, smoothness=0.3)
    data = path.to_json(scene="tiny")
    assert data["format"] == FORMAT and data["version"] == 1 and data["scene"] == "tiny"
    json.dumps(data, allow_nan=False)  # strict JSON
    file = tmp_path / "sub" / "camera_path.json"
    path.save(file, scene="tiny")
    assert not [p for p in file.parent.iterdir() if p.name != file.name]  # no temporary file left
    back = CameraPath.load(file)
    assert len(back) == 4 and back.duration == 6.5 and back.smoothness == 0.3
    for a, b in zip(back.keyframes, path.keyframes):
        np.testing.assert_array_equal(a.c2w, b.c2w)
        assert a.fov_deg == b.fov_deg
    np.testing.assert_allclose(back.pose_at(1.3).c2w, path.pose_at(1.3).c2w, atol=1e-12)
    # 3x4 poses are accepted, and a little float noise in a rotation is straightened out
    data["keyframes"][0]["c2w"] = (np.asarray(data["keyframes"][0]["c2w"])[:3] * (1 + 1e-7)).tolist()
    fixed = CameraPath.from_json(data)
    assert _is_rotation(fixed[0].c2w[:3, :3])
    # an existing file is replaced
    CameraPath(_keys()[:2]).save(file)
    assert len(CameraPath.load(file)) == 2
    with pytest.raises(CameraPathError, match="no keyframes"):
        CameraPath().save(tmp_path / "empty.json")


def _good():
    return CameraPath(_keys()[:2]).to_json()


def _with(**changes):
    data = _good()
    data.update(changes)
    return data


def _key_with(**changes):
    data = _good()
    data["keyframes"][1].update(changes)
    return data


@pytest.mark.parametrize("data, message", [
    ([1, 2], "JSON object"),
    ({"keyframes": []}, "Not a camera path file"),
    (_with(format="nerfstudio"), "Not a camera path file"),
    (_with(version=2), "newer viewer"),
    (_with(version="1"), "version"),
    (_with(keyframes=[]), "no keyframes"),
    (_with(keyframes={"c2w": 1}), "must be a list"),
    (_with(keyframes=[1]), "Keyframe 1 must be an object"),
    (_with(duration=0), "duration"),
    (_with(duration="long"), "duration must be a number"),
    (_with(smoothness=2), "smoothness"),
    (_key_with(c2w=[[1, 0], [0, 1]]), "Keyframe 2: c2w must be a 4x4"),
    (_key_with(c2w=[[1, 0, 0, "x"]] * 4), "Keyframe 2: c2w must be a 4x4"),
    (_key_with(c2w=[[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "Keyframe 2: c2w"),
    (_key_with(c2w=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
    (_key_with(c2w=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not a rotation"),
    (_key_with(c2w=[[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not a rotation"),
    (_key_with(fov_deg=0), "fov_deg"),
    (_key_with(fov_deg=True), "fov_deg must be a number"),
])
def test_bad_json_is_refused_with_a_reason(data, message):
    with pytest.raises(CameraPathError, match=message):
        CameraPath.from_json(data)


def test_bad_files_are_refused_with_a_reason(tmp_path):
    with pytest.raises(CameraPathError, match="not found"):
        CameraPath.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "nsv-camera-path", "keyframes": [')
    with pytest.raises(CameraPathError, match="malformed JSON"):
        CameraPath.load(broken)
    nan = tmp_path / "nan.json"
    data = _good()
    data["keyframes"][0]["c2w"][0][3] = float("nan")
    nan.write_text(json.dumps(data))  # Python writes NaN, which json.load reads back
    with pytest.raises(CameraPathError, match=r"nan\.json: Keyframe 1: c2w holds a value that is not finite"):
        CameraPath.load(nan)
    with pytest.raises(CameraPathError, match="folder"):
        CameraPath(_keys()).save(tmp_path)
