"""LLFF forward-facing datasets: ``poses_bounds.npy`` + ``images_{factor}/``.

``poses_bounds.npy`` is (N, 17): a row-major 3x5 matrix per image, ``[R | t | hwf]`` with the
rotation columns in LLFF's [down, right, back] camera axes and the last column (H, W, focal) of
the *full-size* images, followed by the near and far scene depth bounds of that view.

Processing follows the NeRF reference code (``load_llff.py``, Mildenhall et al. 2020) exactly:
axes converted to OpenGL [right, up, back], translations and bounds rescaled so the nearest bound
is 1/0.75 (``bd_factor``), poses re-centred so their average is the identity, and rays are
rendered in NDC (near plane 1, t in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.data import DatasetError, SceneData, Split
from models.data.blender import check_background
from models.data.images import IMAGE_EXTENSIONS, image_size, read_images, to_rgb

BD_FACTOR = 0.75
NDC_AABB = ((-1.5, -1.5, -1.0), (1.5, 1.5, 1.0))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def view_matrix(z: np.ndarray, up: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(3, 4) camera matrix with back axis ``z``, approximate ``up`` and centre ``pos``."""
    vec2 = _normalize(z)
    vec0 = _normalize(np.cross(up, vec2))
    vec1 = _normalize(np.cross(vec2, vec0))
    return np.stack([vec0, vec1, vec2, pos], 1)


def poses_avg(poses: np.ndarray) -> np.ndarray:
    """(3, 4) average of (N, 3, 4+) OpenGL poses: mean centre, summed back and up axes."""
    center = poses[:, :3, 3].mean(0)
    vec2 = _normalize(poses[:, :3, 2].sum(0))
    up = poses[:, :3, 1].sum(0)
    return view_matrix(vec2, up, center)


def recenter_poses(poses: np.ndarray) -> np.ndarray:
    """(N, 3, 4) poses expressed relative to their average pose (which becomes the identity)."""
    bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
    c2w = np.concatenate([poses_avg(poses), bottom], 0)
    p4 = np.concatenate([poses[:, :3, :4], np.broadcast_to(bottom, (poses.shape[0], 1, 4))], 1)
    return (np.linalg.inv(c2w) @ p4)[:, :3, :4]


def image_folder(root: Path, factor: int | None) -> Path:
    return root / ("images" if factor in (None, 1) else f"images_{factor}")


def list_images(folder: Path) -> list[Path]:
    """Sorted image files of an LLFF image folder (png/jpg, any case)."""
    if not folder.is_dir():
        parent = folder.parent
        have = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith("images")) if parent.is_dir() else []
        raise DatasetError(
            f"{folder}: image folder not found (available: {', '.join(have) if have else 'none'})"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"{folder}: no .png/.jpg images")
    return files


def read_poses_bounds(path: Path) -> np.ndarray:
    """(N, 17) float64 array from ``poses_bounds.npy``, validated."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise DatasetError(f"{path}: not a NumPy .npy array file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        what = "holds Python objects, which are never loaded" if "pickle" in str(e) else (
            str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise DatasetError(f"{path}: unreadable ({what})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] < 1:
        raise DatasetError(f"{path}: expected an (N, 17) array of 3x5 poses + 2 bounds, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":  # np.number would admit complex and timedelta64 values
        raise DatasetError(f"{path}: expected real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DatasetError(f"{path}: row {int(np.argmax(bad))} contains NaN or inf")
    bds = arr[:, 15:]
    if (bds <= 0).any() or (bds[:, 1] <= bds[:, 0]).any():
        raise DatasetError(f"{path}: near/far bounds must be positive with near < far")
    rot = arr[:, :15].reshape(-1, 3, 5)[:, :, :3]
    sv = np.linalg.svd(rot, compute_uv=False)  # (N, 3)
    singular = (sv[:, -1] < 1e-6 * np.maximum(sv[:, 0], 1e-12)) | (sv[:, 0] < 1e-9)
    if singular.any():
        raise DatasetError(f"{path}: row {int(np.argmax(singular))} has a singular rotation (all zeros or degenerate axes)")
    hwf = arr[:, :15].reshape(-1, 3, 5)[:, :, 4]
    if (hwf <= 0).any():
        raise DatasetError(f"{path}: image height, width and focal (the 5th column) must be positive")
    return arr


def load_llff(
    root: str | Path,
    factor: int | None = 8,
    holdout: int = 8,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    workers: int | None = None,
) -> SceneData:
    """Load an LLFF forward-facing scene as the NeRF reference code does.

    Args:
        root: folder with ``poses_bounds.npy`` and ``images_{factor}/`` (``images/`` for 1/None).
        factor: which downsampled image folder to read; H, W and focal are rescaled from the
            full-size values in ``poses_bounds.npy`` by the actual image width.
        holdout: every ``holdout``-th image (0, 8, 16, ...) is a test view, the rest train;
            "val" is the same as "test" (the reference protocol has no separate val set).
            Must be >= 2.
        background: used only if the images carry alpha (LLFF images do not).
        workers: image-decoding threads.
    Returns:
        SceneData of kind "llff": OpenGL poses, near=0/far=1 and aabb in NDC, ``ndc`` =
        {width, height, focal, near=1}, up=(0, 1, 0); ``extra["bounds"]`` is the (N, 2) float32
        tensor of per-image near/far depths after the bd_factor rescale (world units of the
        returned poses), ``extra["scale"]`` that rescale factor, ``extra["test_indices"]`` the
        held-out image indices.
    Raises:
        DatasetError: one line naming the file and problem.
    """
    root = Path(root)
    bg = check_background(background)
    if not isinstance(holdout, int) or holdout < 2:
        raise ValueError(f"holdout must be an integer >= 2, got {holdout!r}")
    pb_path = root / "poses_bounds.npy"
    arr = read_poses_bounds(pb_path)
    folder = image_folder(root, factor)
    files = list_images(folder)
    if len(files) != arr.shape[0]:
        raise DatasetError(
            f"{pb_path}: {arr.shape[0]} poses but {len(files)} images in {folder.name}/ (counts must match)"
        )

    stacked = read_images(files, prepare=lambda img, p: to_rgb(img, bg), workers=workers, channels=4)
    n, h, w = stacked.shape[:3]

    poses = arr[:, :15].reshape(-1, 3, 5)
    bds = arr[:, 15:17].copy()
    h_full, w_full, f_full = poses[0, 0, 4], poses[0, 1, 4], poses[0, 2, 4]
    if h_full <= 0 or w_full <= 0 or f_full <= 0:
        raise DatasetError(f"{pb_path}: the pose's [H, W, focal] column must be positive, got {poses[0, :, 4]}")
    focal = float(f_full * w / w_full)
    if abs(h_full * w / w_full - h) > 1.0:
        raise DatasetError(
            f"{folder}: images are {w}x{h} but poses_bounds.npy describes {int(w_full)}x{int(h_full)} "
            "(aspect ratios differ)"
        )

    # [down, right, back] -> [right, up, back], exactly the reference's column shuffle
    poses = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:]], 2)
    sc = 1.0 / (bds.min() * BD_FACTOR)
    poses[:, :3, 3] *= sc
    bds *= sc
    c2w = recenter_poses(poses[:, :, :4])
    c2w = np.concatenate([c2w, np.broadcast_to([[0.0, 0.0, 0.0, 1.0]], (n, 1, 4))], 1)

    images = torch.from_numpy(stacked)
    c2w_t = torch.from_numpy(c2w.astype(np.float32))
    intr = torch.tensor([focal, focal, w / 2.0, h / 2.0], dtype=torch.float32).expand(n, 4).contiguous()
    test_idx = list(range(0, n, holdout))
    train_idx = [i for i in range(n) if i % holdout != 0]
    names = [p.name for p in files]

    def split(idx: list[int]) -> Split:
        ii = torch.tensor(idx, dtype=torch.long)
        return Split(
            names=[names[i] for i in idx],
            images=images[ii],
            c2w=c2w_t[ii],
            intrinsics=intr[ii],
        )

    test = split(test_idx)
    return SceneData(
        kind="llff",
        root=root,
        splits={"train": split(train_idx), "val": test, "test": test},
        near=0.0,
        far=1.0,
        aabb=torch.tensor(NDC_AABB, dtype=torch.float32),
        background=bg,
        ndc={"width": int(w), "height": int(h), "focal": focal, "near": 1.0},
        up=(0.0, 1.0, 0.0),
        extra={
            "bounds": torch.from_numpy(bds.astype(np.float32)),
            "scale": float(sc),
            "test_indices": test_idx,
            "factor": factor,
        },
    )


def describe_llff(root: str | Path, factor: int | None = 8, holdout: int = 8) -> dict:
    """Metadata summary without decoding images: kind, images per split, image size."""
    root = Path(root)
    pb_path = root / "poses_bounds.npy"
    arr = read_poses_bounds(pb_path)
    folder = image_folder(root, factor)
    try:
        files = list_images(folder)
    except DatasetError:
        # summarise whichever downsampled folder exists (the dialog shows it)
        cands = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("images"))
        if not cands:
            raise
        folder = cands[-1]
        files = list_images(folder)
    n = len(files)
    if n != arr.shape[0]:
        raise DatasetError(f"{pb_path}: {arr.shape[0]} poses but {n} images in {folder.name}/ (counts must match)")
    w, h = image_size(files[0])
    n_test = len(range(0, n, holdout))
    return {
        "kind": "llff",
        "root": str(root),
        "splits": {"train": n - n_test, "val": n_test, "test": n_test},
        "width": w,
        "height": h,
        "image_folder": folder.name,
    }
