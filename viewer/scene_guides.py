"""Scene guides: the dataset cameras' frustums and the scene's bounding box as 3D line segments
(numpy only, no Qt or GL), and the projection that puts them over a rendered view.

The canvas uploads ``SceneGuides.vertices`` once per scene (or when the highlighted camera
changes) and draws them with ``shaders/guides.vert``/``guides.frag`` after the frame quad, with
``view_projection`` of the view on screen. ``project_segments`` gives the same lines in pixels of
any request (for drawing them onto a saved image when the user asks for that).

Projection (OpenGL convention, camera looks down -z, +y up, pixel rows go down): a camera-space
point (x, y, z) lands on pixel u = cx + fx·x/(-z), v = cy - fy·y/(-z), the inverse of
``models.cameras.pixel_rays``; NDC is x = 2u/W - 1, y = 1 - 2v/H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewer.camera import DatasetCamera

SPLIT_COLOURS = {"train": (1.0, 0.60, 0.15), "test": (0.30, 0.70, 1.0), "val": (0.45, 0.90, 0.45)}
"""Frustum colour per dataset split (others: OTHER_COLOUR)."""
OTHER_COLOUR = (0.80, 0.55, 0.95)
CURRENT_COLOUR = (1.0, 0.95, 0.20)
"""The dataset camera the view is snapped to."""
BOX_COLOUR = (0.85, 0.85, 0.85)
FRUSTUM_DEPTH = 0.12
"""Frustum length as a fraction of the scene radius (half the bounding box diagonal)."""

_BOX_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7],
                       [0, 4], [1, 5], [2, 6], [3, 7]])
"""Corner pairs of the 12 box edges; corner i has x = bit 0, y = bit 1, z = bit 2 (0: min, 1: max)."""


def box_segments(aabb) -> np.ndarray:
    """(12, 2, 3) edges of the axis-aligned box [[x0, y0, z0], [x1, y1, z1]]."""
    aabb = np.asarray(aabb, dtype=np.float64)
    bits = (np.arange(8)[:, None] >> np.arange(3)) & 1  # (8, 3)
    corners = np.where(bits == 1, aabb[1], aabb[0])
    return corners[_BOX_EDGES]


def frustum_segments(cameras: list[DatasetCamera], depth: float) -> np.ndarray:
    """(N, 10, 2, 3) lines per camera: 4 from the centre to the image corners at ``depth`` in
    front of it, the 4 edges of that image rectangle, and a 2-line tick above its top edge
    (which way is up)."""
    if not cameras:
        return np.zeros((0, 10, 2, 3))
    k = np.array([[c.camera.width, c.camera.height, c.camera.fx, c.camera.fy, c.camera.cx, c.camera.cy]
                  for c in cameras], dtype=np.float64)
    w, h, fx, fy, cx, cy = (k[:, i:i + 1] for i in range(6))
    u = np.concatenate([np.zeros_like(w), w, w, np.zeros_like(w)], 1)   # corners: TL, TR, BR, BL
    v = np.concatenate([np.zeros_like(h), np.zeros_like(h), h, h], 1)
    corners = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1) * depth  # (N, 4, 3)
    top_mid = 0.5 * (corners[:, 0] + corners[:, 1])
    tick = top_mid + np.stack([np.zeros_like(top_mid[:, 0]), 0.3 * (corners[:, 0, 1] - corners[:, 3, 1]),
                               np.zeros_like(top_mid[:, 0])], -1)
    origin = np.zeros_like(corners)
    nxt = np.roll(corners, -1, axis=1)
    tri = np.stack([corners[:, 0] + 0.25 * (corners[:, 1] - corners[:, 0]), tick,
                    corners[:, 1] + 0.25 * (corners[:, 0] - corners[:, 1])], 1)
    cam = np.concatenate([np.stack([origin, corners], 2),                 # (N, 4, 2, 3) rays
                          np.stack([corners, nxt], 2),                    # (N, 4, 2, 3) rectangle
                          np.stack([tri[:, :2], tri[:, 1:]], 2)], 1)      # (N, 2, 2, 3) up tick
    c2w = np.stack([c.camera.c2w.numpy() for c in cameras])               # (N, 4, 4)
    return np.einsum("nij,nsej->nsei", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]


@dataclass
class SceneGuides:
    """The line segments of a scene's guides and their colours."""

    cameras: list[DatasetCamera]
    aabb: np.ndarray
    frustums: np.ndarray
    """(N, 10, 2, 3) world-space lines per dataset camera."""
    box: np.ndarray
    """(12, 2, 3) bounding-box edges."""

    @staticmethod
    def for_scene(scene, cameras: list[DatasetCamera]) -> SceneGuides:
        aabb = np.asarray(scene.aabb, dtype=np.float64)
        radius = float(np.linalg.norm(aabb[1] - aabb[0]) / 2)
        return SceneGuides(cameras, aabb, frustum_segments(cameras, FRUSTUM_DEPTH * max(radius, 1e-6)),
                           box_segments(aabb))

    def segments(self, current: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(S, 2, 3) segments and (S, 3) colours: the box, then each camera's frustum
        (``current``, the camera the view is snapped to, highlighted)."""
        colours = np.array([SPLIT_COLOURS.get(c.split, OTHER_COLOUR) for c in self.cameras], dtype=np.float64)
        if 0 <= current < len(self.cameras):
            colours[current] = CURRENT_COLOUR
        seg = np.concatenate([self.box, self.frustums.reshape(-1, 2, 3)], 0)
        col = np.concatenate([np.broadcast_to(BOX_COLOUR, (len(self.box), 3)),
                              np.repeat(colours.reshape(-1, 3), self.frustums.shape[1], axis=0)], 0)
        return seg, col

    def vertices(self, current: int = -1) -> np.ndarray:
        """(2S, 6) float32 interleaved position + colour, for GL_LINES."""
        seg, col = self.segments(current)
        return np.concatenate([seg.reshape(-1, 3), np.repeat(col, 2, axis=0)], 1).astype(np.float32)


def projection_matrix(width: float, height: float, fx: float, fy: float, cx: float, cy: float,
                      near: float, far: float) -> np.ndarray:
    """(4, 4) OpenGL projection of pinhole intrinsics (pixels, rows downward) onto NDC."""
    p = np.zeros((4, 4))
    p[0, 0], p[0, 2] = 2 * fx / width, 1 - 2 * cx / width
    p[1, 1], p[1, 2] = 2 * fy / height, 2 * cy / height - 1
    p[2, 2], p[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    p[3, 2] = -1.0
    return p


def view_projection(request, near: float | None = None, far: float | None = None) -> np.ndarray:
    """(4, 4) world -> clip matrix of a RenderRequest (its own near/far unless given)."""
    c2w = np.asarray(request.c2w, dtype=np.float64)
    proj = projection_matrix(request.width, request.height, request.fx, request.fy, request.cx, request.cy,
                             request.near if near is None else near, request.far if far is None else far)
    return proj @ np.linalg.inv(c2w)


def project_segments(segments: np.ndarray, request, min_w: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Segments (S, 2, 3) in pixels of ``request``: (K, 2, 2) endpoints (u, v) and the (K,) index
    of the segment each came from. Parts behind the camera are clipped off (w < ``min_w``);
    segments wholly behind it are dropped. Parts off the image are kept (a painter clips them)."""
    m = view_projection(request, near=1.0, far=2.0)  # only x, y, w are used
    hom = np.concatenate([segments, np.ones(segments.shape[:2] + (1,))], -1) @ m.T  # (S, 2, 4)
    w = hom[..., 3]
    keep = (w > min_w).any(1)
    hom, w, idx = hom[keep], w[keep], np.nonzero(keep)[0]
    a, b = hom[:, 0], hom[:, 1]
    # move the endpoint behind the camera to where the segment crosses w = min_w
    t = np.clip((min_w - w[:, 0]) / np.where(np.abs(w[:, 1] - w[:, 0]) > 1e-12, w[:, 1] - w[:, 0], 1.0), 0, 1)
    a = np.where((w[:, 0] < min_w)[:, None], a + t[:, None] * (b - a), a)
    t = np.clip((min_w - w[:, 1]) / np.where(np.abs(w[:, 0] - w[:, 1]) > 1e-12, w[:, 0] - w[:, 1], 1.0), 0, 1)
    b = np.where((w[:, 1] < min_w)[:, None], b + t[:, None] * (a - b), b)
    ends = np.stack([a, b], 1)
    ndc = ends[..., :2] / ends[..., 3:4]
    px = np.stack([(ndc[..., 0] + 1) * 0.5 * request.width, (1 - ndc[..., 1]) * 0.5 * request.height], -1)
    return px, idx
