"""Video/GIF writing with imageio, atomically (temp file in the same folder, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """Write (H, W, 3) uint8 frames to an .mp4 (H.264 via imageio-ffmpeg) or .gif."""
    import imageio.v2 as imageio

    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{path}: video must end in .mp4 or .gif")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: not a regular file (a video is written as a file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".gif":
            imageio.mimsave(tmp, frames, duration=1000.0 / fps, loop=0)
        else:
            # even sizes for yuv420p; macro_block_size=1 keeps odd sizes from being resized silently
            h, w = frames[0].shape[:2]
            frames = [f[: h - h % 2, : w - w % 2] for f in frames]
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                    macro_block_size=1, pixelformat="yuv420p") as wr:
                for f in frames:
                    wr.append_data(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a normal file's mode, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
