"""Single-file ``transforms.json`` datasets (instant-ngp and nerfstudio).

Layout::

    scene/
      transforms.json     {"fl_x", "fl_y", "cx", "cy", "w", "h" (or "camera_angle_x"/"camera_angle_y"),
                           "frames": [{"file_path": "images/0001.jpg", "transform_matrix": 4x4, ...}]}
      images/...

Poses are OpenGL camera-to-world (the NeRF convention both tools write). Any intrinsic key may
also appear in a frame, overriding the global value for that frame. Lens distortion coefficients
(k1, k2, p1, p2, ...) are not modelled: they are reported in ``SceneData.extra["distortion"]``.

Splits: nerfstudio's optional ``train_filenames`` / ``val_filenames`` / ``test_filenames`` lists
are honoured; without them frames are sorted by ``file_path`` and every 8th frame (0, 8, 16, ...,
``holdout``) is a test view, the rest train, and "val" is the same set as "test".

Bounds: an ``aabb`` key wins; else instant-ngp's ``aabb_scale`` (with its ``scale``/``offset``,
defaults 0.33 and 0.5) gives the cube instant-ngp would march. With neither, the content box is
estimated from the cameras (see ``estimate_bounds``). ``near``/``far`` keys win; else they are
derived from the box (see ``near_far_from_aabb``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.data import DatasetError, SceneData, Split
from models.data.blender import (
    check_background,
    frames_of,
    inside,
    number,
    parse_bounds,
    parse_pose,
    read_json_file,
)
from models.data.images import find_image, image_size, read_images

FILE_NAME = "transforms.json"
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
NGP_DEFAULT_SCALE = 0.33
NGP_DEFAULT_OFFSET = (0.5, 0.5, 0.5)


def _json_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / FILE_NAME


def _norm_name(name: str) -> str:
    """A file name as split lists compare them: no "./", no extension, forward slashes."""
    p = Path(name.replace("\\", "/"))
    parts = [q for q in p.with_suffix("").parts if q != "."]
    return "/".join(parts)


def frame_intrinsics(
    meta: dict, frame: dict, path: Path, where: str, image_wh: tuple[int, int]
) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of one frame in pixels of the image as stored.

    Frame keys override global ones. The focal comes from ``fl_x`` or ``camera_angle_x`` (with
    ``w``), ``fl_y``/``camera_angle_y`` default to the x focal; cx, cy default to the image
    centre. When the declared ``w``/``h`` differ from the stored image (downscaled copies),
    all four are scaled by stored/declared size.
    """

    def get(key: str, positive: bool = False) -> float | None:
        v = number(frame, key, path, positive) if key in frame else None
        return v if v is not None else number(meta, key, path, positive)

    img_w, img_h = image_wh
    w = get("w", positive=True) or float(img_w)
    h = get("h", positive=True) or float(img_h)

    def focal(fl_key: str, angle_key: str, size: float) -> float | None:
        for src in (frame, meta):  # frame-level keys (either kind) beat global ones
            if src.get(fl_key) is not None:
                return number(src, fl_key, path, positive=True)
            if src.get(angle_key) is not None:
                a = number(src, angle_key, path, positive=True)
                return 0.5 * size / math.tan(0.5 * a)
        return None

    fx = focal("fl_x", "camera_angle_x", w)
    fy = focal("fl_y", "camera_angle_y", h)
    if fx is None and fy is None:
        raise DatasetError(f"{where}: no focal length (need 'fl_x' or 'camera_angle_x', globally or per frame)")
    fx = fy if fx is None else fx
    fy = fx if fy is None else fy
    cx = get("cx")
    cy = get("cy")
    cx = w / 2.0 if cx is None else cx
    cy = h / 2.0 if cy is None else cy
    sx, sy = img_w / w, img_h / h
    return fx * sx, fy * sy, cx * sx, cy * sy


def closest_point_to_axes(origins: np.ndarray, forward: np.ndarray) -> tuple[np.ndarray, bool]:
    """Least-squares point nearest to all lines ``o_i + s d_i``; (point, well_conditioned).

    Solves sum_i (I - d_i d_i^T) c = sum_i (I - d_i d_i^T) o_i. Ill-conditioned when the axes are
    (nearly) parallel, as in forward-facing captures.
    """
    d = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (N, 3, 3)
    a = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    eig = np.linalg.eigvalsh(a)
    ok = eig[0] > 1e-2 * len(origins)
    return (np.linalg.solve(a, b) if ok else origins.mean(0)), bool(ok)


def estimate_bounds(c2w: np.ndarray, half_fov: float) -> np.ndarray:
    """(2, 3) content box estimated from (N, 4, 4) OpenGL poses, when the file gives none.

    Rule: the centre is the point closest (least squares) to all optical axes, if the axes
    converge in front of the cameras; R is the median camera-to-centre distance and the box is
    the cube of half-size R * tan(half_fov) (what a camera at distance R sees edge to edge through
    the centre; for the Blender scenes this gives ~1.45, close to their [-1.5, 1.5]^3). For
    parallel axes (forward-facing captures) the centre is put 3 camera-spreads (at least 1 unit)
    ahead of the mean camera along the mean viewing direction and the half-size equals that
    distance.
    """
    origins = c2w[:, :3, 3]
    forward = -c2w[:, :3, 2]
    centre, ok = closest_point_to_axes(origins, forward)
    if ok:
        ahead = np.einsum("ij,ij->i", centre[None] - origins, forward)
        ok = bool((ahead > 0).mean() > 0.5)
    if ok:
        r = float(np.median(np.linalg.norm(origins - centre[None], axis=-1)))
        half = max(r * math.tan(half_fov), 1e-3)
    else:
        spread = float(np.sqrt(((origins - origins.mean(0)) ** 2).sum(-1).mean()))
        dist = max(3.0 * spread, 1.0)
        mean_fwd = forward.mean(0)
        mean_fwd = mean_fwd / max(np.linalg.norm(mean_fwd), 1e-9)
        centre = origins.mean(0) + dist * mean_fwd
        half = dist
    return np.stack([centre - half, centre + half])


def near_far_from_aabb(c2w: np.ndarray, aabb: np.ndarray, max_ray_angle: float) -> tuple[float, float]:
    """Depth range covering the box from every camera.

    near = (smallest camera-to-box distance) * cos(widest ray angle off the optical axis), a
    lower bound of the depth of any box point a ray can reach (depth = distance * cos(angle));
    1% of the box diagonal when a camera is inside the box. far = largest camera-to-corner
    distance (depth <= distance).
    """
    o = c2w[:, :3, 3]
    lo, hi = aabb[0], aabb[1]
    gap = np.maximum(np.maximum(lo[None] - o, o - hi[None]), 0.0)
    d_min = float(np.linalg.norm(gap, axis=-1).min())
    diag = float(np.linalg.norm(hi - lo))
    near = max(d_min * math.cos(max_ray_angle), 0.01 * diag)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    far = float(np.linalg.norm(o[:, None] - corners[None], axis=-1).max())
    return near, max(far, near * 1.001 + 1e-6)


def _ngp_aabb(meta: dict, path: Path) -> np.ndarray | None:
    s = number(meta, "aabb_scale", path, positive=True)
    if s is None:
        return None
    scale = number(meta, "scale", path, positive=True) or NGP_DEFAULT_SCALE
    off = meta.get("offset", NGP_DEFAULT_OFFSET)
    try:
        off = np.asarray(off, dtype=np.float64).reshape(3)
    except (ValueError, TypeError):
        raise DatasetError(f"{path}: 'offset' must be three numbers") from None
    centre = (0.5 - off) / scale
    half = s / (2.0 * scale)
    return np.stack([centre - half, centre + half])


def _up_vector(c2w: np.ndarray) -> tuple[float, float, float]:
    """Mean camera up axis, snapped to a world axis when within ~25 degrees of one."""
    up = c2w[:, :3, 1].mean(0)
    n = np.linalg.norm(up)
    if n < 1e-6:
        return (0.0, 0.0, 1.0)
    up = up / n
    k = int(np.argmax(np.abs(up)))
    if abs(up[k]) > 0.9:
        snapped = np.zeros(3)
        snapped[k] = np.sign(up[k])
        up = snapped
    return tuple(float(x) for x in up)  # type: ignore[return-value]


def _split_indices(meta: dict, frames: list[dict], holdout: int, path: Path) -> dict[str, list[int]]:
    keys = [k for k in ("train", "val", "test") if isinstance(meta.get(f"{k}_filenames"), list)]
    if keys:
        index = {_norm_name(fr["file_path"]): i for i, fr in enumerate(frames)}
        out: dict[str, list[int]] = {}
        for k in keys:
            idx = []
            for name in meta[f"{k}_filenames"]:
                if not isinstance(name, str) or _norm_name(name) not in index:
                    raise DatasetError(f"{path}: '{k}_filenames' names {name!r}, which is not a frame")
                idx.append(index[_norm_name(name)])
            out[k] = idx
        if "train" not in out:
            held = set(i for v in out.values() for i in v)
            out["train"] = [i for i in range(len(frames)) if i not in held]
        if "val" not in out and "test" in out:
            out["val"] = out["test"]
        if "test" not in out and "val" in out:
            out["test"] = out["val"]
        if not out["train"]:
            raise DatasetError(f"{path}: the split lists leave no training frame (every frame is held out)")
        return out
    test = list(range(0, len(frames), holdout)) if len(frames) > 1 else []
    train = [i for i in range(len(frames)) if i % holdout != 0 or len(frames) == 1]
    return {"train": train, "val": test, "test": test}


def load_transforms_json(
    path: str | Path,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    max_images: int | None = None,
    holdout: int = 8,
    workers: int | None = None,
) -> SceneData:
    """Load an instant-ngp / nerfstudio ``transforms.json`` dataset.

    Args:
        path: the dataset folder or the json file itself; ``file_path`` entries are relative to
            the json and may omit the extension (.png, .jpg tried in turn).
        background: RGB that images with alpha are composited over.
        max_images: keep only the first N frames (after sorting by file name) before splitting.
        holdout: without split lists, every ``holdout``-th frame (0, 8, 16, ...) is a test view.
        workers: image-decoding threads.
    Returns:
        SceneData of kind "transforms_json" with train/val/test splits (empty ones omitted).
    Raises:
        DatasetError: one line naming the file and problem (including images of differing sizes).
    """
    json_path = _json_path(path)
    bg = check_background(background)
    if not isinstance(holdout, int) or holdout < 2:
        raise ValueError(f"holdout must be an integer >= 2, got {holdout!r}")
    meta = read_json_file(json_path)
    base = json_path.parent
    frames = frames_of(meta, json_path)
    frames = sorted(frames, key=lambda fr: fr["file_path"])
    if max_images is not None:
        frames = frames[:max_images]
    wheres = [f"{json_path}: frame {fr['file_path']}" for fr in frames]
    poses = np.stack([parse_pose(fr["transform_matrix"], w) for fr, w in zip(frames, wheres)])
    files = [inside(base, find_image(base / fr["file_path"]), w) for fr, w in zip(frames, wheres)]

    stacked = read_images(files, workers=workers, channels=4)  # size mismatch -> DatasetError
    n, h, w = stacked.shape[:3]
    intr = np.array([frame_intrinsics(meta, fr, json_path, wh, (w, h)) for fr, wh in zip(frames, wheres)])
    alpha = stacked[..., 3]
    has_alpha = bool((alpha < 1.0).any())
    rgb = stacked[..., :3] * alpha[..., None] + (1.0 - alpha[..., None]) * np.asarray(bg, dtype=np.float32)

    near, far, aabb_t = parse_bounds(meta, json_path)
    half_fov = max(math.atan(0.5 * w / intr[:, 0].min()), math.atan(0.5 * h / intr[:, 1].min()))
    max_ray_angle = math.atan(math.hypot(0.5 * w / intr[:, 0].min(), 0.5 * h / intr[:, 1].min()))
    if aabb_t is not None:
        aabb, aabb_source = aabb_t.double().numpy(), "file"
    elif (ngp := _ngp_aabb(meta, json_path)) is not None:
        aabb, aabb_source = ngp, "aabb_scale"
    else:
        aabb, aabb_source = estimate_bounds(poses, half_fov), "estimated"
    if near is None or far is None:
        est_near, est_far = near_far_from_aabb(poses, aabb, max_ray_angle)
        near = est_near if near is None else near
        far = est_far if far is None else far
        if far <= near:
            raise DatasetError(f"{json_path}: 'near' ({near}) is beyond the estimated far bound ({far})")

    distortion = {k: float(meta[k]) for k in DISTORTION_KEYS if isinstance(meta.get(k), (int, float)) and meta[k] != 0}
    images = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    alpha_t = torch.from_numpy(np.ascontiguousarray(alpha)) if has_alpha else None
    c2w = torch.from_numpy(poses.astype(np.float32))
    intr_t = torch.from_numpy(intr.astype(np.float32))
    names = [f.relative_to(base).as_posix() if f.is_relative_to(base) else f.as_posix() for f in files]

    splits = {}
    for name, idx in _split_indices(meta, frames, holdout, json_path).items():
        if not idx:
            continue
        ii = torch.tensor(idx, dtype=torch.long)
        splits[name] = Split(
            names=[names[i] for i in idx],
            images=images[ii],
            c2w=c2w[ii],
            intrinsics=intr_t[ii],
            alpha=None if alpha_t is None else alpha_t[ii],
        )
    return SceneData(
        kind="transforms_json",
        root=base,
        splits=splits,
        near=float(near),
        far=float(far),
        aabb=torch.tensor(aabb, dtype=torch.float32),
        background=bg,
        ndc=None,
        up=_up_vector(poses),
        extra={"aabb_source": aabb_source, "distortion": distortion, "json": json_path.name},
    )


def describe_transforms_json(path: str | Path, holdout: int = 8) -> dict:
    """Metadata summary without decoding images: kind, images per split, image size."""
    json_path = _json_path(path)
    meta = read_json_file(json_path)
    frames = sorted(frames_of(meta, json_path), key=lambda fr: fr["file_path"])
    idx = _split_indices(meta, frames, holdout, json_path)
    w, h = image_size(find_image(json_path.parent / frames[0]["file_path"]))
    return {
        "kind": "transforms_json",
        "root": str(json_path.parent),
        "splits": {k: len(v) for k, v in idx.items() if v},
        "width": w,
        "height": h,
    }
