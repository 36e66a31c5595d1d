"""Blender "NeRF synthetic" datasets: ``transforms_{train,val,test}.json`` + RGBA PNGs.

File format (Mildenhall et al. 2020)::

    {"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0", "transform_matrix": 4x4}, ...]}

``file_path`` is relative to the json and usually has no extension (".png" is added). Poses are
already OpenGL camera-to-world. Optional keys this loader also reads: ``fl_x``/``fl_y``/``cx``/
``cy`` (pixels, instead of ``camera_angle_x``), ``near``, ``far``, ``aabb`` ([[x0,y0,z0],
[x1,y1,z1]]; the procedural scene writes these three) and, per frame, ``depth_path`` (a float32
``.npy`` depth map; a ``<image name>_depth.npy`` beside the image is picked up too).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.data import DatasetError, SceneData, Split
from models.data.images import as_tensor, box_downsample, find_image, premultiply, read_images

DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0
DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
PROCEDURAL_GENERATOR = "models.data.procedural"
"""Value of the ``generator`` key in files written by ``models.data.procedural``."""


# ----------------------------------------------------------------------------------------------
# Parsing helpers shared with the transforms.json loader
# ----------------------------------------------------------------------------------------------
def read_json_file(path: Path) -> dict:
    """Read a JSON object; any problem becomes a one-line DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to read") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def frames_of(meta: dict, path: Path) -> list[dict]:
    """The non-empty ``frames`` list of a transforms file, each frame a dict with ``file_path``."""
    frames = meta.get("frames")
    if frames is None:
        raise DatasetError(f"{path}: missing key 'frames'")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path}: 'frames' must be a non-empty list")
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise DatasetError(f"{path}: frame {i} is not an object")
        if not isinstance(fr.get("file_path"), str):
            raise DatasetError(f"{path}: frame {i} has no 'file_path' string")
        if "transform_matrix" not in fr:
            raise DatasetError(f"{path}: frame {i} ({fr['file_path']}) has no 'transform_matrix'")
    return frames


def parse_pose(value, where: str) -> np.ndarray:
    """A (4, 4) float64 pose from a nested list (3x4 or 4x4); ``where`` names the frame."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise DatasetError(f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise DatasetError(f"{where}: transform_matrix must be 4x4 or 3x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise DatasetError(f"{where}: transform_matrix contains NaN or inf")
    if m.shape == (3, 4):
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    s = np.linalg.svd(m[:3, :3], compute_uv=False)
    if s[-1] < 1e-6 * max(s[0], 1e-12) or s[0] < 1e-9:
        raise DatasetError(f"{where}: transform_matrix has a singular rotation (all zeros or degenerate axes)")
    return m


def inside(root: Path, file: Path, where: str) -> Path:
    """``file`` if its path lies inside the dataset folder ``root`` (a dataset never reads
    elsewhere: no absolute paths or ``..`` out of the folder; links inside it are followed)."""
    import os

    r, f = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(file))
    if os.path.commonpath([r, f]) != r:
        raise DatasetError(f"{where}: {file} lies outside the dataset folder {root}")
    return Path(file)


def number(meta: dict, key: str, path: Path, positive: bool = False) -> float | None:
    """Optional finite number ``meta[key]`` (None when absent)."""
    if key not in meta or meta[key] is None:
        return None
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DatasetError(f"{path}: '{key}' must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise DatasetError(f"{path}: '{key}' must be positive, got {v!r}")
    return float(v)


def parse_bounds(meta: dict, path: Path) -> tuple[float | None, float | None, torch.Tensor | None]:
    """Optional ``near``, ``far`` and ``aabb`` keys, validated (None for those absent)."""
    near, far = number(meta, "near", path), number(meta, "far", path)
    if near is not None and near < 0:
        raise DatasetError(f"{path}: 'near' must be >= 0, got {near}")
    if near is not None and far is not None and not far > near:
        raise DatasetError(f"{path}: 'far' ({far}) must be greater than 'near' ({near})")
    aabb = None
    if meta.get("aabb") is not None:
        try:
            a = np.asarray(meta["aabb"], dtype=np.float64)
        except (ValueError, TypeError):
            a = np.zeros(0)
        if a.shape != (2, 3) or not np.isfinite(a).all() or not (a[1] > a[0]).all():
            raise DatasetError(f"{path}: 'aabb' must be [[x0,y0,z0],[x1,y1,z1]] with finite min < max")
        aabb = torch.tensor(a, dtype=torch.float32)
    return near, far, aabb


def check_background(background: Sequence[float]) -> tuple[float, float, float]:
    bg = tuple(float(x) for x in background)
    if len(bg) != 3:
        raise ValueError(f"background must be three floats (r, g, b), got {background!r}")
    return bg  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------
def load_blender(
    root: str | Path,
    split_names: Sequence[str] = ("train", "val", "test"),
    half_res: bool = False,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    max_images: int | None = None,
    workers: int | None = None,
) -> SceneData:
    """Load a Blender-format dataset.

    Args:
        root: folder holding ``transforms_train.json`` (required) and optionally
            ``transforms_val.json`` / ``transforms_test.json`` (skipped when absent).
        split_names: which splits to load.
        half_res: halve the resolution with an exact 2x2 box average. The average is taken over
            *premultiplied* RGBA (rgb*a and a), then composited: the result equals compositing at
            full resolution and then averaging, i.e. what a box-filtered render at half
            resolution would show. (The NeRF reference code runs ``cv2.INTER_AREA`` on straight
            RGBA, which slightly darkens/brightens silhouette pixels whose transparent
            neighbours carry arbitrary rgb; on lego the two differ by ~60 dB PSNR.) Focal and
            principal point are halved; depth maps are box-averaged (they are stored
            opacity-weighted, like the volume renderer's depth, so averaging is exact).
        background: RGB the RGBA images are composited over (white by the Blender convention).
        max_images: load only the first N frames of each split (quick previews and tests).
        workers: image-decoding threads (default: cores, at most 8).
    Returns:
        SceneData of kind "blender" ("procedural" for datasets written by this project's
        procedural scene); near/far/aabb from the train file's optional keys, else 2, 6 and
        [-1.5, 1.5]^3. ``Split.alpha`` holds the image opacity.
    Raises:
        DatasetError: one line naming the file and problem.
    """
    root = Path(root)
    bg = check_background(background)
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
    train_file = root / "transforms_train.json"
    if not train_file.is_file():
        raise DatasetError(f"{train_file}: file not found (a Blender dataset needs transforms_train.json)")

    train_meta = read_json_file(train_file)
    near, far, aabb = parse_bounds(train_meta, train_file)
    splits: dict[str, Split] = {}
    for name in split_names:
        path = root / f"transforms_{name}.json"
        if name != "train" and not path.is_file():
            continue
        meta = train_meta if name == "train" else read_json_file(path)
        splits[name] = _load_split(root, path, meta, half_res, bg, max_images, workers)

    kind = "procedural" if train_meta.get("generator") == PROCEDURAL_GENERATOR else "blender"
    return SceneData(
        kind=kind,
        root=root,
        splits=splits,
        near=DEFAULT_NEAR if near is None else near,
        far=DEFAULT_FAR if far is None else far,
        aabb=torch.tensor(DEFAULT_AABB, dtype=torch.float32) if aabb is None else aabb,
        background=bg,
        ndc=None,
        up=(0.0, 0.0, 1.0),
        extra={"half_res": bool(half_res)},
    )


def _load_split(
    root: Path,
    path: Path,
    meta: dict,
    half_res: bool,
    background: tuple[float, float, float],
    max_images: int | None,
    workers: int | None,
) -> Split:
    frames = frames_of(meta, path)
    if max_images is not None:
        frames = frames[:max_images]
    base = path.parent
    poses = np.stack(
        [parse_pose(fr["transform_matrix"], f"{path}: frame {i} ({fr['file_path']})") for i, fr in enumerate(frames)]
    )
    files = [inside(root, find_image(base / fr["file_path"]), f"{path}: frame {i}") for i, fr in enumerate(frames)]
    factor = 2 if half_res else 1

    def prepare(rgba: np.ndarray, p: Path) -> np.ndarray:
        # premultiplied box average, then composite; returns [rgb over background, alpha]
        pm = box_downsample(premultiply(rgba), factor)
        out = np.empty_like(pm)
        out[..., :3] = pm[..., :3] + (1.0 - pm[..., 3:4]) * np.asarray(background, dtype=np.float32)
        out[..., 3] = pm[..., 3]
        return out

    stacked = read_images(files, prepare=prepare, workers=workers, channels=4)
    n, h, w = stacked.shape[:3]
    full_w, full_h = w * factor, h * factor  # of the files (after dropping odd rows/cols)

    fx = number(meta, "fl_x", path, positive=True)
    fy = number(meta, "fl_y", path, positive=True)
    angle = number(meta, "camera_angle_x", path, positive=True)
    if fx is None:
        if angle is None:
            raise DatasetError(f"{path}: missing key 'camera_angle_x' (or 'fl_x')")
        if angle >= math.pi:
            raise DatasetError(f"{path}: camera_angle_x must be below pi (180 degrees), got {angle}")
        fx = 0.5 * full_w / math.tan(0.5 * angle)
    if fy is None:
        angle_y = number(meta, "camera_angle_y", path, positive=True)
        if angle_y is not None and angle_y >= math.pi:
            raise DatasetError(f"{path}: camera_angle_y must be below pi (180 degrees), got {angle_y}")
        fy = 0.5 * full_h / math.tan(0.5 * angle_y) if angle_y is not None else fx
    cx = number(meta, "cx", path)
    cy = number(meta, "cy", path)
    cx = full_w / 2.0 if cx is None else cx
    cy = full_h / 2.0 if cy is None else cy
    intr = torch.tensor([fx, fy, cx, cy], dtype=torch.float64) / factor
    intrinsics = intr.to(torch.float32).expand(n, 4).contiguous()

    depth = _load_depths(base, frames, files, (full_h, full_w), factor, path)
    t = torch.from_numpy(stacked)
    return Split(
        names=[_rel(p, root) for p in files],
        images=t[..., :3].contiguous(),
        c2w=torch.from_numpy(poses.astype(np.float32)),
        intrinsics=intrinsics,
        depth=depth,
        alpha=t[..., 3].contiguous(),
    )


def _load_depths(
    base: Path, frames: list[dict], files: list[Path], full_hw: tuple[int, int], factor: int, path: Path
) -> torch.Tensor | None:
    """(N, H, W) depth when every frame has one (explicit ``depth_path`` or ``<name>_depth.npy``)."""
    candidates = []
    for fr, img in zip(frames, files):
        if fr.get("depth_path") is not None:
            if not isinstance(fr["depth_path"], str):
                raise DatasetError(f"{path}: frame {fr['file_path']}: 'depth_path' must be a string")
            p = inside(base, base / fr["depth_path"], f"{path}: frame {fr['file_path']}: depth_path")
            if not p.is_file():
                raise DatasetError(f"{p}: depth file not found (named by {path.name})")
            candidates.append(p)
        else:
            p = img.with_name(img.stem + "_depth.npy")
            candidates.append(p if p.is_file() else None)
    if any(p is None for p in candidates):
        return None
    out = []
    for p in candidates:
        try:
            d = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DatasetError(f"{p}: unreadable depth map ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        h, w = full_hw
        if d.ndim != 2 or d.shape[0] < h or d.shape[1] < w or d.shape[0] > h + 1 or d.shape[1] > w + 1:
            raise DatasetError(f"{p}: depth map has shape {d.shape}, expected ({h}, {w}) like its image")
        d = np.asarray(d[:h, :w], dtype=np.float32)
        if not np.isfinite(d).all():
            raise DatasetError(f"{p}: depth map contains NaN or inf")
        out.append(box_downsample(d, factor))
    return as_tensor(np.stack(out))


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def describe_blender(root: str | Path) -> dict:
    """Metadata summary without decoding images: kind, images per split, image size."""
    from models.data.images import image_size

    root = Path(root)
    train_file = root / "transforms_train.json"
    if not train_file.is_file():
        raise DatasetError(f"{train_file}: file not found (a Blender dataset needs transforms_train.json)")
    counts: dict[str, int] = {}
    first = None
    kind = "blender"
    for name in ("train", "val", "test"):
        path = root / f"transforms_{name}.json"
        if not path.is_file():
            continue
        meta = read_json_file(path)
        frames = frames_of(meta, path)
        counts[name] = len(frames)
        if name == "train":
            kind = "procedural" if meta.get("generator") == PROCEDURAL_GENERATOR else "blender"
            first = find_image(path.parent / frames[0]["file_path"])
    w, h = image_size(first)
    return {"kind": kind, "root": str(root), "splits": counts, "width": w, "height": h}
