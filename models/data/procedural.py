"""The project's own procedural test scene: exact ray tracing of a few textured primitives.

A deterministic, analytic scene (nobody else's data, so it can be shipped, trained on and
committed). Blender-like convention: z is up, everything lies inside [-1, 1]^3, empty space
around it. Contents (see ``DEFAULT_PRIMITIVES``):

====================  ===================================  ====================================
primitive             where                                texture / material
====================  ===================================  ====================================
pedestal (cylinder)   centre (0, 0, -0.7), r 0.95, h 0.2   grey concentric rings on top, matte
checker sphere        centre (-0.35, -0.3, -0.2), r 0.4    orange/cream 12x6 checker, glossy
striped box           centre (0.45, -0.2, -0.35), half     blue/white diagonal stripes,
                      0.25, turned 30 deg about z          semi-gloss
banded cylinder       centre (0.1, 0.45, -0.2), r 0.2,     green/yellow horizontal bands
                      h 0.8
red ball              centre (-0.45, 0.4, -0.42), r 0.18   plain red, very shiny
====================  ===================================  ====================================

Shading: Lambert diffuse + Blinn-Phong specular (view dependent) from a key light (casting
exact hard shadows) and a fill light, plus ambient. Every pixel is the average of 2x2
jitter-free sub-pixel rays, so edges are anti-aliased. Outputs are over a transparent
background: ``alpha`` is the covered fraction of the pixel, ``rgb`` is *premultiplied* by it
(composite with ``rgb + (1 - alpha) * background``) and ``depth`` is the opacity-weighted z-depth
(``t`` along the project's rays, whose camera-space z is -1), exactly what the volume renderer's
``depth = sum w_i t_i`` estimates; divide by alpha for the surface depth.

``write_dataset`` writes all this as a Blender-format dataset (RGBA PNGs with straight alpha,
``<name>_depth.npy`` depth maps) that ``models.data.blender.load_blender`` reads back.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from models.cameras import Camera, look_at, pixel_rays, ray_aabb
from models.data.blender import PROCEDURAL_GENERATOR
from models.storage import write_json

EPS = 1e-4
INF = float("inf")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _first_positive(t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """Smallest of (t0 <= t1) that is > EPS, inf when neither is."""
    t = torch.where(t0 > EPS, t0, t1)
    return torch.where(t > EPS, t, torch.full_like(t, INF))


def _rot_z(angle_deg: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Primitives: intersect(o, d) -> t, then normal/albedo at hit points
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Material:
    """Blinn-Phong coefficients (the albedo comes from the primitive's texture)."""

    specular: float = 0.2
    """Specular reflectance k_s."""
    shininess: float = 32.0
    """Blinn-Phong exponent."""


@dataclass(frozen=True)
class Sphere:
    """A sphere, textured by ``checker`` (u, v cells) or plain ``color`` when checker is None."""

    centre: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]
    color2: tuple[float, float, float] | None = None
    """Second checker colour (None: plain)."""
    checker: tuple[int, int] = (12, 6)
    """Checker cells around (longitude) and along (latitude)."""
    material: Material = Material()

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """o, d: (R, 3) -> t (R,), inf where missed."""
        oc = o - torch.tensor(self.centre)
        a = (d * d).sum(-1)
        b = (oc * d).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - a * c
        sq = disc.clamp_min(0).sqrt()
        t = _first_positive((-b - sq) / a, (-b + sq) / a)
        return torch.where(disc >= 0, t, torch.full_like(t, INF))

    def surface(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p: (M, 3) hit points -> unit normals (M, 3), albedo (M, 3)."""
        n = (p - torch.tensor(self.centre)) / self.radius
        n = n / n.norm(dim=-1, keepdim=True)
        if self.color2 is None:
            return n, torch.tensor(self.color).expand_as(n)
        u = torch.atan2(n[:, 1], n[:, 0]) / (2 * math.pi) + 0.5
        v = torch.acos(n[:, 2].clamp(-1, 1)) / math.pi
        cell = (torch.floor(u * self.checker[0]) + torch.floor(v * self.checker[1])) % 2
        return n, torch.where(cell[:, None] > 0, torch.tensor(self.color2), torch.tensor(self.color))


@dataclass(frozen=True)
class Box:
    """A box turned by ``angle_z`` degrees about the vertical axis, with diagonal stripes."""

    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    angle_z: float
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    stripe: float = 0.1
    """Stripe width (world units) along the local (1, 1, 1) direction."""
    material: Material = Material()

    def _local(self, x: torch.Tensor, point: bool) -> torch.Tensor:
        r = _rot_z(self.angle_z)
        if point:
            x = x - torch.tensor(self.centre)
        return x @ r  # rows: R^T x

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        half = torch.tensor(self.half)
        t0, t1 = ray_aabb(self._local(o, True), self._local(d, False), torch.stack([-half, half]))
        t = _first_positive(t0, t1)
        return torch.where(t0 <= t1, t, torch.full_like(t, INF))

    def surface(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp = self._local(p, True)
        rel = lp.abs() / torch.tensor(self.half)
        axis = rel.argmax(-1)
        n_local = torch.nn.functional.one_hot(axis, 3).to(p.dtype) * torch.sign(lp.gather(1, axis[:, None]))
        n = n_local @ _rot_z(self.angle_z).T
        cell = torch.floor(lp.sum(-1) / self.stripe) % 2
        return n, torch.where(cell[:, None] > 0, torch.tensor(self.color2), torch.tensor(self.color))


@dataclass(frozen=True)
class Cylinder:
    """A capped vertical cylinder: horizontal ``bands`` on the side (or rings on the top cap)."""

    centre: tuple[float, float, float]
    radius: float
    height: float
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    band: float = 0.1
    """Band height on the side / ring width on the top (world units)."""
    rings_on_top: bool = False
    """Pedestal style: concentric rings on the top cap and a plain side in ``color``."""
    material: Material = Material()

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        lo = o - torch.tensor(self.centre)
        hh, r = self.height / 2, self.radius
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = lo[:, 0] * d[:, 0] + lo[:, 1] * d[:, 1]
        c = lo[:, 0] ** 2 + lo[:, 1] ** 2 - r * r
        disc = b * b - a * c
        sq = disc.clamp_min(0).sqrt()
        a_safe = torch.where(a > 1e-12, a, torch.ones_like(a))
        cands = []
        for t in ((-b - sq) / a_safe, (-b + sq) / a_safe):
            ok = (disc >= 0) & (a > 1e-12) & ((lo[:, 2] + t * d[:, 2]).abs() <= hh) & (t > EPS)
            cands.append(torch.where(ok, t, torch.full_like(t, INF)))
        dz = torch.where(d[:, 2].abs() > 1e-12, d[:, 2], torch.full_like(d[:, 2], 1e-12))
        for zc in (hh, -hh):
            t = (zc - lo[:, 2]) / dz
            x, y = lo[:, 0] + t * d[:, 0], lo[:, 1] + t * d[:, 1]
            ok = (x * x + y * y <= r * r) & (t > EPS)
            cands.append(torch.where(ok, t, torch.full_like(t, INF)))
        return torch.stack(cands, -1).amin(-1)

    def surface(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp = p - torch.tensor(self.centre)
        hh = self.height / 2
        radial = torch.sqrt(lp[:, 0] ** 2 + lp[:, 1] ** 2)
        on_cap = (hh - lp[:, 2].abs()) < (self.radius - radial)
        side_n = torch.stack([lp[:, 0], lp[:, 1], torch.zeros_like(radial)], -1) / radial.clamp_min(1e-9)[:, None]
        cap_n = torch.zeros_like(lp)
        cap_n[:, 2] = torch.sign(lp[:, 2])
        n = torch.where(on_cap[:, None], cap_n, side_n)
        c1, c2 = torch.tensor(self.color), torch.tensor(self.color2)
        if self.rings_on_top:
            ring = (torch.floor(radial / self.band) % 2 > 0) & on_cap & (lp[:, 2] > 0)
        else:
            ring = (torch.floor((lp[:, 2] + hh) / self.band) % 2 > 0) & ~on_cap
        return n, torch.where(ring[:, None], c2, c1)


DEFAULT_PRIMITIVES = (
    Cylinder((0.0, 0.0, -0.7), 0.95, 0.2, (0.45, 0.45, 0.5), (0.75, 0.75, 0.78), band=0.12,
             rings_on_top=True, material=Material(0.05, 8.0)),
    Sphere((-0.35, -0.3, -0.2), 0.4, (0.92, 0.45, 0.1), (0.95, 0.93, 0.85), material=Material(0.35, 48.0)),
    Box((0.45, -0.2, -0.35), (0.25, 0.25, 0.25), 30.0, (0.15, 0.3, 0.8), (0.9, 0.9, 0.95),
        material=Material(0.25, 24.0)),
    Cylinder((0.1, 0.45, -0.2), 0.2, 0.8, (0.2, 0.65, 0.3), (0.95, 0.85, 0.2), material=Material(0.2, 16.0)),
    Sphere((-0.45, 0.4, -0.42), 0.18, (0.8, 0.08, 0.08), material=Material(0.6, 96.0)),
)


@dataclass(frozen=True)
class Light:
    """A directional light (direction *towards* the light)."""

    direction: tuple[float, float, float]
    intensity: float
    shadows: bool = False


DEFAULT_LIGHTS = (
    Light((0.6, -0.5, 1.0), 0.85, shadows=True),
    Light((-0.7, 0.6, 0.5), 0.3),
)


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProceduralScene:
    """The analytic test scene; ``render`` ray-traces it exactly (vectorised over rays)."""

    primitives: tuple = DEFAULT_PRIMITIVES
    """Sphere / Box / Cylinder instances, all inside [-1, 1]^3."""
    lights: tuple[Light, ...] = DEFAULT_LIGHTS
    """Directional lights; the first one casts hard shadows."""
    ambient: float = 0.18
    """Ambient term added to the diffuse lighting."""
    supersample: int = 2
    """Sub-pixel rays per pixel side (2 -> 2x2 at offsets 0.25, 0.75)."""
    chunk: int = 1 << 17
    """Rays traced at once (bounds memory)."""
    aabb: tuple = field(default=((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2)))
    """Bounds written to datasets (content lies inside [-1, 1]^3)."""

    # ------------------------------------------------------------------------------ tracing
    def _nearest(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """o, d: (R, 3) -> nearest t (R,) (inf on a miss) and primitive index (R,)."""
        ts = torch.stack([p.intersect(o, d) for p in self.primitives], -1)  # (R, P)
        return ts.min(-1)

    def trace(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trace rays (R, 3) (d un-normalised): rgb (R, 3) shaded colour (0 on misses),
        hit (R,) bool and t (R,) (0 on misses)."""
        o, d = o.to(torch.float32), d.to(torch.float32)
        t, idx = self._nearest(o, d)
        hit = torch.isfinite(t)
        rgb = torch.zeros_like(o)
        if hit.any():
            hi = hit.nonzero()[:, 0]
            p = o[hi] + t[hi, None] * d[hi]
            n = torch.empty_like(p)
            albedo = torch.empty_like(p)
            ks = torch.empty(len(hi))
            shin = torch.empty(len(hi))
            prim = idx[hi]
            for k, pr in enumerate(self.primitives):
                m = prim == k
                if m.any():
                    n[m], albedo[m] = pr.surface(p[m])
                    ks[m], shin[m] = pr.material.specular, pr.material.shininess
            view = -d[hi] / d[hi].norm(dim=-1, keepdim=True)
            n = torch.where(((n * view).sum(-1) < 0)[:, None], -n, n)  # face the viewer
            diffuse = torch.full((len(hi),), self.ambient)
            spec = torch.zeros(len(hi))
            for light in self.lights:
                ldir = torch.tensor(light.direction, dtype=torch.float32)
                ldir = ldir / ldir.norm()
                ndl = (n * ldir).sum(-1).clamp_min(0)
                lit = (ndl > 0).to(torch.float32)
                if light.shadows:
                    so = p + 1e-3 * n
                    st, _ = self._nearest(so, ldir.expand_as(so))
                    lit = lit * (~torch.isfinite(st)).to(torch.float32)
                h = ldir + view
                h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-9)
                ndh = (n * h).sum(-1).clamp_min(0)
                diffuse = diffuse + light.intensity * ndl * lit
                spec = spec + light.intensity * ks * ndh.pow(shin) * lit
            rgb[hi] = (albedo * diffuse[:, None] + spec[:, None]).clamp(0, 1)
        return {"rgb": rgb, "hit": hit, "t": torch.where(hit, t, torch.zeros_like(t))}

    def _render_views(self, c2w: torch.Tensor, width: int, height: int, fx: float, fy: float, cx: float, cy: float):
        """c2w: (V, 4, 4) -> rgb (V, H, W, 3) premultiplied, alpha (V, H, W), depth (V, H, W)."""
        s = self.supersample
        offs = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5  # sub-pixel centre offsets
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
        # (H, W, s*s) sub-pixel coordinates; pixel_rays adds the 0.5 of the pixel centre
        su = (u[..., None, None] + offs[None, :]).expand(height, width, s, s).reshape(height, width, s * s)
        sv = (v[..., None, None] + offs[:, None]).expand(height, width, s, s).reshape(height, width, s * s)
        # rays of all views at once (a per-view loop of cheap ray generation), traced in chunks
        rays = [pixel_rays(c2w[i].to(torch.float32), fx, fy, cx, cy, su, sv) for i in range(c2w.shape[0])]
        o = torch.cat([r[0].reshape(-1, 3) for r in rays])
        d = torch.cat([r[1].reshape(-1, 3) for r in rays])
        rgb, hit, t = [], [], []
        for a in range(0, o.shape[0], self.chunk):
            r = self.trace(o[a : a + self.chunk], d[a : a + self.chunk])
            rgb.append(r["rgb"])
            hit.append(r["hit"])
            t.append(r["t"])
        shape = (c2w.shape[0], height, width, s * s)
        cov = torch.cat(hit).to(torch.float32).reshape(shape)
        rgb = (torch.cat(rgb).reshape(*shape, 3) * cov[..., None]).mean(3)
        return rgb, cov.mean(-1), (torch.cat(t).reshape(shape) * cov).mean(-1)

    def render(self, camera: Camera) -> dict[str, torch.Tensor]:
        """Render one camera over a transparent background.

        Returns:
            rgb (H, W, 3) premultiplied by alpha, alpha (H, W) pixel coverage in [0, 1],
            depth (H, W) opacity-weighted z-depth (0 where empty).
        """
        rgb, alpha, depth = self._render_views(
            camera.c2w[None].cpu(), camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy
        )
        return {"rgb": rgb[0], "alpha": alpha[0], "depth": depth[0]}

    # ------------------------------------------------------------------------------ cameras
    @staticmethod
    def camera_poses(n: int, seed: int = 0, split: str = "train", radius: float = 4.0) -> torch.Tensor:
        """(n, 4, 4) c2w on the upper hemisphere at ``radius``, looking at the origin, z up.

        Deterministic in (seed, split); splits use different streams so their views differ.
        Directions are uniform in azimuth and in height z/radius over [0.15, 0.95] (not grazing
        the pedestal, not straight down).
        """
        sid = SPLIT_IDS.get(split, zlib.crc32(split.encode()) % 1000 + 3)
        g = torch.Generator().manual_seed(int(seed) * 1009 + sid)
        az = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
        z = 0.15 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
        rxy = torch.sqrt(1 - z * z)
        eyes = radius * torch.stack([rxy * torch.cos(az), rxy * torch.sin(az), z], -1).to(torch.float32)
        up = torch.tensor([0.0, 0.0, 1.0])
        if n == 0:
            return torch.zeros(0, 4, 4)
        return torch.stack([look_at(e, torch.zeros(3), up) for e in eyes])

    # ------------------------------------------------------------------------------ dataset
    def write_dataset(
        self,
        out: str | Path,
        size: int = 64,
        views: Sequence[int] = (40, 8, 8),
        camera_angle_x: float = 0.69,
        seed: int = 0,
    ) -> Path:
        """Write a Blender-format dataset of this scene to the folder ``out``.

        Writes ``transforms_{train,val,test}.json`` (with extra keys near 2, far 6, aabb
        [-1.2, 1.2]^3, generator, seed, and per frame ``depth_path``), ``<split>/r_<i>.png``
        (RGBA, straight alpha) and ``<split>/r_<i>_depth.npy`` (float32, opacity-weighted
        z-depth). Everything is written into a temporary sibling folder that is renamed into
        place at the end, so ``out`` is never half written. An existing ``out`` is replaced only
        when it is empty or was written by this function; otherwise FileExistsError.

        Args:
            out: target folder.
            size: image width = height in pixels.
            views: number of train (>= 1), val and test views; a split with 0 views gets no
                transforms file (the loader then simply has no such split).
            camera_angle_x: horizontal field of view in radians.
            seed: camera pose seed.
        Returns:
            the dataset folder.
        """
        out = Path(out)
        if out.exists() and not _replaceable(out):
            raise FileExistsError(f"{out}: exists and is not a procedural dataset; not overwriting it")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            focal = 0.5 * size / math.tan(0.5 * camera_angle_x)
            if len(views) != 3 or int(views[0]) < 1 or min(int(v) for v in views) < 0:
                raise ValueError(f"views must be (train >= 1, val >= 0, test >= 0) counts, got {views!r}")
            for split, n in zip(("train", "val", "test"), views):
                if int(n) == 0:
                    continue  # no file: the loader treats a missing val/test split as absent
                c2w = self.camera_poses(int(n), seed, split)
                (tmp / split).mkdir()
                frames = []
                rgb, alpha, depth = self._render_views(c2w, size, size, focal, focal, size / 2, size / 2)
                straight = torch.where(alpha[..., None] > 0, rgb / alpha[..., None].clamp_min(1e-12), 0.0)
                rgba = torch.cat([straight, alpha[..., None]], -1).clamp(0, 1)
                png = (rgba * 255.0).round().to(torch.uint8).numpy()
                for i in range(int(n)):
                    name = f"r_{i}"
                    Image.fromarray(png[i]).save(tmp / split / f"{name}.png")
                    np.save(tmp / split / f"{name}_depth.npy", depth[i].numpy().astype(np.float32))
                    frames.append(
                        {
                            "file_path": f"./{split}/{name}",
                            "depth_path": f"./{split}/{name}_depth.npy",
                            "transform_matrix": c2w[i].tolist(),
                        }
                    )
                write_json(
                    tmp / f"transforms_{split}.json",
                    {
                        "camera_angle_x": camera_angle_x,
                        "near": 2.0,
                        "far": 6.0,
                        "aabb": [list(self.aabb[0]), list(self.aabb[1])],
                        "generator": PROCEDURAL_GENERATOR,
                        "seed": int(seed),
                        "frames": frames,
                    },
                )
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _replaceable(out: Path) -> bool:
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    marker = out / "transforms_train.json"
    try:
        return marker.is_file() and PROCEDURAL_GENERATOR in marker.read_text(encoding="utf-8")
    except OSError:
        return False


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, then deleted."""
    os.chmod(tmp, 0o755)  # mkdtemp / mkstemp make folder and json files private
    for p in tmp.glob("*.json"):
        os.chmod(p, 0o644)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
