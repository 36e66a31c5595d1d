"""Scene folder: ``scene.json`` (versioned manifest) + one ``.safetensors`` file per model.

Layout::

    myscene/
      scene.json             manifest, see SceneManifest below
      nerf.safetensors       teacher weights (coarse.* and fine.*)
      occupancy.safetensors  occupancy grid (bool voxels) used for empty-space skipping
      kilonerf.safetensors   distilled KiloNeRF grid (when distilled)
      r2l.safetensors        distilled R2L light field (when distilled)
      checkpoints/           resumable training state (never needed for viewing)

``scene.json`` keys: ``format`` ("neural-scene"), ``version``, ``dataset`` {path, kind},
``aabb`` [[x0,y0,z0],[x1,y1,z1]], ``near``, ``far``, ``ndc`` (null or {width, height, focal,
near}), ``background`` [r,g,b], ``camera_convention`` ("opengl"), ``up`` [x,y,z], ``cameras``
{split: [{c2w, width, height, fx, fy, cx, cy, name}]}, ``backends`` {name: {weights, config,
metrics, updated}}, ``occupancy`` {weights, resolution, threshold} or null.

Nothing here unpickles: weights are safetensors, the manifest is JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.cameras import Camera
from models.storage import StorageError, load_tensors, read_json, save_tensors, write_json

FORMAT = "neural-scene"
VERSION = 1


DERIVED_TENSORS: dict[str, tuple[str, ...]] = {"kilonerf": ("ess.distance",)}
"""Tensors an export leaves out because the backend recomputes them when loading (KiloNeRF's
empty-space distance field is a function of its occupancy grid: 0.5 s on a CPU)."""

_BITS, _SHAPE = "__bits", "__shape"


def pack_masks(tensors: dict[str, torch.Tensor], min_numel: int = 1 << 16) -> dict[str, torch.Tensor]:
    """Store large 0/1 tensors (bool or uint8 masks such as occupancy grids) as packed bits:
    ``name__bits`` (uint8, 8 voxels per byte) + ``name__shape`` (int64). 8x smaller on disk."""
    out = {}
    for k, v in tensors.items():
        if v.dtype in (torch.bool, torch.uint8) and v.numel() >= min_numel and bool((v.to(torch.uint8) <= 1).all()):
            bits = np.packbits(v.to(torch.uint8).reshape(-1).cpu().numpy())
            out[k + _BITS] = torch.from_numpy(bits)
            out[k + _SHAPE] = torch.tensor(list(v.shape), dtype=torch.int64)
        else:
            out[k] = v
    return out


def unpack_masks(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_masks` (uint8 0/1 tensors); other tensors pass through."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(_SHAPE):
            continue
        if k.endswith(_BITS):
            name = k[: -len(_BITS)]
            shape = [int(x) for x in tensors[name + _SHAPE].tolist()]
            n = int(np.prod(shape))
            if v.dtype != torch.uint8 or v.numel() != (n + 7) // 8:
                raise ValueError(f"'{name}' holds {v.numel()} bytes, its shape {shape} needs {(n + 7) // 8}")
            bits = np.unpackbits(v.cpu().numpy(), count=n)
            out[name] = torch.from_numpy(bits.reshape(shape)).to(v.device)
        else:
            out[k] = v
    return out


def remove_stale_work_folders(parent: Path, name: str) -> None:
    """Remove ``.NAME.export-PID`` folders of exports that were killed (their process is gone);
    a ``.NAME.replaced-PID`` folder of a killed replace is put back when NAME itself is missing."""
    import os
    import shutil

    for p in Path(parent).glob(f".{name}.*-*"):
        kind, _, pid = p.name[len(name) + 2 :].rpartition("-")
        if kind not in ("export", "replaced") or not pid.isdigit() or not p.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        target = Path(parent) / name
        if kind == "replaced" and not target.exists():
            p.rename(target)  # the replace was killed between its two renames: the old scene returns
        else:
            shutil.rmtree(p, ignore_errors=True)



def manifest_camera(entry: dict, dtype: torch.dtype = torch.float32) -> Camera:
    """The pinhole camera of one ``cameras`` entry of scene.json: a (4, 4) c2w (a stored (3, 4) gets
    its last row), size, focal lengths, and the principal point (the image centre when absent)."""
    c2w = torch.tensor(entry["c2w"], dtype=dtype)
    if c2w.shape == (3, 4):
        c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=dtype)])
    w, h = int(entry["width"]), int(entry["height"])
    return Camera(c2w, w, h, float(entry["fx"]), float(entry["fy"]), float(entry.get("cx", w / 2.0)),
                  float(entry.get("cy", h / 2.0)))

class SceneError(Exception):
    """A scene folder is missing, malformed or of an unsupported version."""


class SceneLock:
    """One writer per scene folder: a ``.writer.lock`` file naming the process that trains into it.

    A second job gets a ``SceneError`` naming the first; the lock of a process that died (kill -9)
    is taken over. Use as a context manager around a job that writes the scene.
    """

    FILE = ".writer.lock"

    def __init__(self, root: Path, what: str = "a training job"):
        self.path = Path(root) / self.FILE
        self.what = what
        self.held = False

    def __enter__(self) -> "SceneLock":
        import json
        import os
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    info = json.loads(self.path.read_text() or "{}")
                    pid = int(info.get("pid", -1))
                except (OSError, ValueError):
                    info, pid = {}, -1
                if pid > 0 and _alive(pid):
                    raise SceneError(f"{self.path.parent}: {info.get('what', 'another job')} (process {pid}, since "
                                     f"{info.get('since', '?')}) is writing this scene; wait for it to finish or "
                                     "stop it") from None
                self.path.unlink(missing_ok=True)  # its writer is gone: a stale lock
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "what": self.what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.held = True
            return self
        raise SceneError(f"{self.path}: could not take the scene's writer lock")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Scene:
    """An opened scene folder (the manifest in memory; weights loaded on demand)."""

    root: Path
    near: float
    far: float
    aabb: list[list[float]]
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    ndc: dict | None = None
    up: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    dataset: dict = field(default_factory=dict)
    cameras: dict[str, list[dict]] = field(default_factory=dict)
    backends: dict[str, dict] = field(default_factory=dict)
    occupancy: dict | None = None
    extra: dict = field(default_factory=dict)
    unknown: dict = field(default_factory=dict)
    """Top-level manifest keys this version does not know (written back unchanged)."""

    MANIFEST = "scene.json"
    KNOWN_KEYS = ("format", "version", "dataset", "aabb", "near", "far", "ndc", "background", "camera_convention",
                  "up", "cameras", "backends", "occupancy", "extra")

    # ------------------------------------------------------------------------------ creation
    @staticmethod
    def create(root: Path, data) -> "Scene":
        """A new scene folder for a dataset (``models.data.SceneData``); writes the manifest."""
        root = Path(root)
        cams = {}
        for split_name, split in data.splits.items():
            cams[split_name] = [
                {
                    "name": split.names[i],
                    "c2w": split.c2w[i].tolist(),
                    "width": split.width,
                    "height": split.height,
                    "fx": float(split.intrinsics[i, 0]),
                    "fy": float(split.intrinsics[i, 1]),
                    "cx": float(split.intrinsics[i, 2]),
                    "cy": float(split.intrinsics[i, 3]),
                }
                for i in range(len(split.names))
            ]
        scene = Scene(
            root=root,
            near=float(data.near),
            far=float(data.far),
            aabb=[list(map(float, data.aabb[0])), list(map(float, data.aabb[1]))],
            background=list(map(float, data.background)),
            ndc=data.ndc,
            up=list(map(float, data.up)),
            dataset={"path": str(Path(data.root).resolve()), "kind": data.kind},
            cameras=cams,
        )
        scene.save_manifest()
        return scene

    # -------------------------------------------------------------------------------- loading
    @staticmethod
    def load(root: Path) -> "Scene":
        root = Path(root)
        if not root.exists():
            raise SceneError(f"{root}: scene folder not found")
        if not root.is_dir():
            raise SceneError(f"{root}: not a folder (a scene is a folder holding scene.json)")
        try:
            m = read_json(root / Scene.MANIFEST)
        except StorageError as e:
            raise SceneError(str(e)) from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise SceneError(f"{root / Scene.MANIFEST}: not a scene manifest (format must be '{FORMAT}')")
        if m.get("version") != VERSION:
            raise SceneError(
                f"{root / Scene.MANIFEST}: unsupported scene version {m.get('version')!r} (this build reads {VERSION})"
            )
        try:
            aabb = m["aabb"]
            if len(aabb) != 2 or any(len(r) != 3 for r in aabb):
                raise ValueError("aabb must be [[x0,y0,z0],[x1,y1,z1]]")
            scene = Scene(
                root=root,
                near=float(m["near"]),
                far=float(m["far"]),
                aabb=[[float(x) for x in r] for r in aabb],
                background=[float(x) for x in m.get("background", [1, 1, 1])],
                ndc=m.get("ndc"),
                up=[float(x) for x in m.get("up", [0, 0, 1])],
                dataset=dict(m.get("dataset", {})),
                cameras=dict(m.get("cameras", {})),
                backends=dict(m.get("backends", {})),
                occupancy=m.get("occupancy"),
                extra=dict(m.get("extra", {})),
                unknown={k: v for k, v in m.items() if k not in Scene.KNOWN_KEYS},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SceneError(f"{root / Scene.MANIFEST}: malformed manifest ({e!r})") from None
        for name, entry in scene.backends.items():
            if not isinstance(entry, dict) or "weights" not in entry:
                raise SceneError(f"{root / Scene.MANIFEST}: backend '{name}' entry has no 'weights' file")
            scene.file_in_folder(entry["weights"], f"backends.{name}.weights")
            if not isinstance(entry.get("config", {}), dict) or not isinstance(entry.get("metrics", {}), dict):
                raise SceneError(f"{root / Scene.MANIFEST}: backends.{name}: config and metrics must be objects")
        if scene.occupancy is not None:
            if not isinstance(scene.occupancy, dict) or "weights" not in scene.occupancy:
                raise SceneError(f"{root / Scene.MANIFEST}: occupancy: expected an object with a 'weights' file")
            scene.file_in_folder(scene.occupancy["weights"], "occupancy.weights")
        if len(scene.background) != 3 or len(scene.up) != 3 or not (scene.far > scene.near):
            raise SceneError(f"{root / Scene.MANIFEST}: background and up need 3 numbers and far > near")
        return scene

    def file_in_folder(self, name, field: str) -> Path:
        """``self.root / name`` for a manifest's file entry, which must be a plain file name in
        the scene folder (no folders, no absolute paths: a scene never reads outside itself)."""
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise SceneError(f"{self.root / self.MANIFEST}: {field}: expected a file name in the scene folder, "
                             f"got {name!r}")
        return self.root / name

    def to_json(self) -> dict:
        return {
            **self.unknown,
            "format": FORMAT,
            "version": VERSION,
            "dataset": self.dataset,
            "aabb": self.aabb,
            "near": self.near,
            "far": self.far,
            "ndc": self.ndc,
            "background": self.background,
            "camera_convention": "opengl",
            "up": self.up,
            "cameras": self.cameras,
            "backends": self.backends,
            "occupancy": self.occupancy,
            "extra": self.extra,
        }

    def save_manifest(self) -> None:
        write_json(self.root / self.MANIFEST, self.to_json())

    # -------------------------------------------------------------------------------- weights
    def save_model(self, name: str, tensors: dict[str, torch.Tensor], config: dict, metrics: dict | None = None) -> None:
        """Write ``<name>.safetensors`` atomically and register it in the manifest."""
        fname = f"{name}.safetensors"
        save_tensors(self.root / fname, tensors, metadata={"backend": name})
        self.backends[name] = {
            "weights": fname,
            "config": config,
            "metrics": metrics or self.backends.get(name, {}).get("metrics", {}),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.save_manifest()

    def set_metrics(self, name: str, metrics: dict) -> None:
        self.backends.setdefault(name, {}).setdefault("metrics", {}).update(metrics)
        self.save_manifest()

    def load_model(self, name: str, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, config) of a registered model; clear SceneError when missing/corrupt."""
        entry = self.backends.get(name)
        if entry is None:
            raise SceneError(f"{self.root}: no '{name}' model in this scene")
        try:
            tensors = load_tensors(self.file_in_folder(entry["weights"], f"backends.{name}.weights"), device)
        except StorageError as e:
            raise SceneError(str(e)) from None
        # weights may be stored in half precision (exported scenes); modules run in float32
        tensors = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in tensors.items()}
        try:
            tensors = unpack_masks(tensors)
        except (KeyError, RuntimeError, ValueError) as e:
            raise SceneError(f"{self.root / entry['weights']}: packed mask unreadable ({e})") from None
        return tensors, dict(entry.get("config", {}))

    def save_occupancy(self, grid: torch.Tensor, threshold: float) -> None:
        save_tensors(self.root / "occupancy.safetensors", {"occupied": grid.to(torch.uint8)})
        self.occupancy = {"weights": "occupancy.safetensors", "resolution": list(grid.shape), "threshold": threshold}
        self.save_manifest()

    def load_occupancy(self, device: str | torch.device = "cpu") -> torch.Tensor | None:
        """(X, Y, Z) bool occupancy grid over ``aabb`` or None if the scene has none."""
        if not self.occupancy:
            return None
        try:
            t = load_tensors(self.file_in_folder(self.occupancy["weights"], "occupancy.weights"), device)["occupied"]
        except (StorageError, KeyError) as e:
            raise SceneError(f"{self.root}: occupancy grid unreadable ({e})") from None
        if t.dim() != 3 or min(t.shape) < 1:
            raise SceneError(f"{self.root}: occupancy grid must be a 3-D grid, got shape {tuple(t.shape)}")
        return t.bool()

    def export(self, out: Path, half: bool = True, backends: list[str] | None = None, force: bool = False) -> "Scene":
        """Copy this scene to ``out`` without checkpoints, weights optionally stored as float16.

        For sharing and for the bundled demo: the copy holds only what the viewer needs. Refuses to
        write into the scene itself (or around it), and over an existing scene unless ``force``.
        The copy is written complete in a hidden folder beside ``out`` first; an existing ``out`` is
        then moved aside, the copy renamed into place, and only then the old one removed, so a kill
        at any moment leaves either scene whole. Hidden folders left by killed exports are removed.
        """
        import os
        import shutil

        out = Path(out)
        src, dst = self.root.resolve(), out.resolve()
        if dst == src or src in dst.parents or dst in src.parents:
            raise SceneError(f"{out}: export target is the scene {self.root} itself, inside it or around it; "
                             "choose another folder")
        if out.exists() and not out.is_dir():
            raise SceneError(f"{out}: exists and is not a folder")
        if out.exists() and any(out.iterdir()):
            if not (out / self.MANIFEST).exists():
                raise SceneError(f"{out}: exists, is not empty and is not a scene; refusing to overwrite")
            if not force:
                raise SceneError(f"{out}: a scene is already there; pass --force to replace it")
        unknown = sorted(set(backends or ()) - set(self.backends))
        if unknown:
            raise SceneError(f"{self.root}: no trained backend {', '.join(unknown)} to export "
                             f"(the scene has {', '.join(self.backends) or 'none'})")
        parent = out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SceneError(f"{out}: cannot write a scene there ({e.strerror or e})") from None
        remove_stale_work_folders(parent, out.name)
        tmp = parent / f".{out.name}.export-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
        except OSError as e:
            raise SceneError(f"{out}: cannot write a scene there ({e.strerror or e})") from None
        try:
            copy = Scene(**{**self.__dict__, "root": tmp, "backends": {}})
            for name, entry in self.backends.items():
                if backends is not None and name not in backends:
                    continue
                tensors, config = self.load_model(name)
                if half:
                    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
                    tensors = {k: v for k, v in tensors.items() if k not in DERIVED_TENSORS.get(name, ())}
                    tensors = pack_masks(tensors)
                copy.save_model(name, tensors, config, entry.get("metrics", {}))
                copy.backends[name]["stored_as"] = "float16" if half else "float32"
            if self.occupancy:
                grid = self.load_occupancy()
                copy.save_occupancy(grid, self.occupancy.get("threshold", 0.0))
            copy.save_manifest()
            old = None
            if out.exists():
                with SceneLock(out, "an export"):  # never under a job that is writing it
                    old = parent / f".{out.name}.replaced-{os.getpid()}"
                    out.rename(old)
            tmp.rename(out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Scene.load(out)

    # -------------------------------------------------------------------------------- cameras
    def camera_list(self, split: str = "test") -> list[Camera]:
        return [manifest_camera(c) for c in self.cameras.get(split, [])]

    @property
    def aabb_tensor(self) -> torch.Tensor:
        return torch.tensor(self.aabb, dtype=torch.float32)

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"
