"""Dataset format detection: pick the loader from the files a folder holds.

=========================  ==========================================================
folder holds               loader
=========================  ==========================================================
``transforms_train.json``  ``models.data.blender.load_blender`` (also procedural scenes)
``poses_bounds.npy``       ``models.data.llff.load_llff``
``transforms.json``        ``models.data.transforms_json.load_transforms_json``
=========================  ==========================================================

Checked in that order. A path naming one of these files is treated as its folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from models.data import DatasetError, SceneData

MARKERS = {
    "transforms_train.json": "blender",
    "poses_bounds.npy": "llff",
    "transforms.json": "transforms_json",
}


def detect_kind(path: str | Path) -> tuple[str, Path]:
    """("blender" | "llff" | "transforms_json", folder) for a dataset folder or marker file.

    Raises:
        DatasetError: the path does not exist or holds none of the marker files.
    """
    path = Path(path)
    if path.is_file() and path.name in MARKERS:
        return MARKERS[path.name], path.parent
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        for marker, kind in MARKERS.items():
            if (path / marker).is_file():
                return kind, path
    raise DatasetError(
        f"{path}: not a dataset folder (expected transforms_train.json, transforms.json or poses_bounds.npy)"
    )


def load_dataset(path: str | Path, **options) -> SceneData:
    """Detect the format of ``path`` and load it; ``options`` go to the loader unchanged.

    Options per loader: blender (split_names, half_res, background, max_images, workers), llff
    (factor, holdout, background, workers), transforms_json (background, max_images, holdout,
    workers). An option the detected loader does not take is dropped when it is None or False
    (so a CLI can pass ``half_res=False`` for any format) and raises a DatasetError otherwise.
    """
    kind, root = detect_kind(path)
    if kind == "blender":
        from models.data.blender import load_blender as loader
    elif kind == "llff":
        from models.data.llff import load_llff as loader
    else:
        from models.data.transforms_json import load_transforms_json as loader
    accepted = set(inspect.signature(loader).parameters) - {"root", "path"}
    unknown = sorted(k for k, v in options.items() if k not in accepted and v is not None and v is not False)
    if unknown:
        raise DatasetError(
            f"{root}: option(s) {', '.join(unknown)} do not apply to a {kind} dataset "
            f"(accepted: {', '.join(sorted(accepted))})"
        )
    return loader(root, **{k: v for k, v in options.items() if k in accepted})


def describe_dataset(path: str | Path) -> dict:
    """A quick summary of a dataset folder from its metadata and one image header.

    Returns:
        {"kind", "root", "splits": {split: number of images}, "width", "height"} (+ format
        specific keys), without decoding the images — cheap enough for a file dialog preview.
    Raises:
        DatasetError: like ``load_dataset``.
    """
    kind, root = detect_kind(path)
    if kind == "blender":
        from models.data.blender import describe_blender

        return describe_blender(root)
    if kind == "llff":
        from models.data.llff import describe_llff

        return describe_llff(root)
    from models.data.transforms_json import describe_transforms_json

    return describe_transforms_json(root)
