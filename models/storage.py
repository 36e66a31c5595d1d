"""Atomic, pickle-free persistence: JSON and safetensors written to a temp file, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class StorageError(Exception):
    """A file could not be read or written; the message names the file and the problem."""


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"{path}: is a folder; name a file to write")
    if path.exists() and not path.is_file():  # a device or a pipe (/dev/null, /dev/stdout): write into it
        try:
            write(str(path))  # never replace the node itself
        except OSError as e:
            raise StorageError(f"{path}: cannot write ({e.strerror or e})") from None
        return
    if path.parent.exists() and not path.parent.is_dir():
        raise StorageError(f"{path.parent}: is a file, not a folder to write {path.name} into")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only folder: the old file stays, the temporary one goes
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise StorageError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    _atomic_replace(Path(path), write)


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise StorageError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise StorageError(f"{path}: JSON nested too deeply to read") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StorageError(f"{path}: unreadable ({e})") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a flat dict of tensors as safetensors, atomically."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_replace(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load safetensors (never pickle); missing or corrupt files raise StorageError."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise StorageError(f"{path}: corrupt or truncated weights ({e})") from None
