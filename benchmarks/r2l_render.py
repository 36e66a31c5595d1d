"""Render time of R2L students at 800x800 against their arithmetic and memory floors.

Random weights (the time of a fused kernel does not depend on the weights' values), a lego-like
camera: 800x800, focal 1111 px, 4 units from the centre of a [-1, 1]^3 box that the network's
feature planes span. For every variant it times

* ``kernel``: the fused Triton renderer alone on the frame's rays (``triton.testing.do_bench``,
  median), and
* ``render``: ``R2LBackend.render`` as the viewer calls it (rays from the camera, the kernel, the
  frame copied to host memory), median of 10 after warm-up,

and reports FPS, MFLOPs per ray and achieved TFLOP/s (2 x multiply-adds of the network), and for
feature-plane variants the texel bytes gathered per ray (K points x levels x 3 planes x 4 texels x
channels x 2 bytes) with the implied gather bandwidth; the bf16 GEMM peak is measured in the same
process.

    python benchmarks/r2l_render.py [--variants P8x4-512-K128-W256D12-M128,P8x4-512-K64-W256D12,W256D88]
        [--size 800] [--json FILE] [--sweep 64x8,128x4,...] [--scene SCENE]

``--scene`` takes the feature box, the occupancy mask of "-M" variants (built from the scene's
occupancy grid as distillation builds it) and the camera (its first test view, scaled to
``--size``) from a trained scene, so that the kernels skip the texels of that scene's empty
space; without it the box is [-1, 1]^3, masks keep every cell, and the camera is the lego-like
one above.

Prints a Markdown table; needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.backends.base import RenderRequest  # noqa: E402
from models.backends.r2l import R2LBackend  # noqa: E402
from models.cameras import Camera, camera_rays, look_at  # noqa: E402
from models.fields.r2l_mlp import R2LMLPConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r2l_step import bf16_peak_tflops  # noqa: E402


def texel_bytes(cfg: R2LMLPConfig) -> int:
    if cfg.encoding != "planes":
        return 0
    return cfg.n_points * len(cfg.plane_resolutions) * 3 * 4 * cfg.plane_channels * 2


class Setup:
    """Feature box, occupancy grid and camera of the timing: a trained scene's, or the defaults."""

    def __init__(self, size: int, scene_dir: str | None):
        self.size = size
        self.box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        self.occupied = self.aabb = None
        focal = 1111.0 * size / 800
        c2w, fx, fy, cx, cy = (look_at(torch.tensor([0.0, -3.4, 2.1]), torch.zeros(3), torch.tensor([0.0, 0, 1])),
                               focal, focal, size / 2, size / 2)
        self.near, self.far = 2.0, 6.0
        if scene_dir:
            from models.scene import Scene
            from models.training.distill_r2l import R2LDistillConfig, occupied_box

            scene = Scene.load(Path(scene_dir))
            self.aabb = torch.tensor(scene.aabb, dtype=torch.float32)
            self.occupied = scene.load_occupancy("cpu")
            self.box = occupied_box(self.aabb, self.occupied, R2LDistillConfig().box_margin)
            self.near, self.far = float(scene.near), float(scene.far)
            cam = (scene.cameras.get("test") or scene.cameras["train"])[0]
            k = size / float(cam["width"])
            c2w = torch.tensor(cam["c2w"], dtype=torch.float32)
            fx, fy, cx, cy = (float(cam[n]) * k for n in ("fx", "fy", "cx", "cy"))
        self.camera = Camera(c2w, size, size, fx, fy, cx, cy)

    def backend(self, cfg: R2LMLPConfig) -> tuple[R2LBackend, float]:
        """A fused backend of random weights over the box; the kept fraction of its mask cells."""
        torch.manual_seed(0)
        b = R2LBackend("cuda", cfg, accel="fused")
        kept = 1.0
        if cfg.encoding == "planes":
            b.net.set_box(self.box)
            if cfg.mask_resolution and self.occupied is not None:
                kept = b.net.set_mask_from_occupancy(self.occupied, self.aabb)
                b.net.to("cuda")
        return b, kept


def measure(name: str, setup: Setup) -> dict:
    import triton.testing

    cfg = R2LMLPConfig.from_name(name)
    b, kept = setup.backend(cfg)
    size, cam = setup.size, setup.camera
    req = RenderRequest.from_camera(cam, setup.near, setup.far, precision="fp16")
    b.render(req)  # builds and checks the fused kernel
    path = b.active_path()
    times = []
    for _ in range(13):
        torch.cuda.synchronize()
        t = time.perf_counter()
        b.render(req)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    render_ms = sorted(times[3:])[len(times[3:]) // 2] * 1e3
    o, d = camera_rays(cam)
    o, d = o.reshape(-1, 3).cuda(), d.reshape(-1, 3).cuda()
    fused = b._fused
    kernel_ms = float(triton.testing.do_bench(lambda: fused(o, d), warmup=50, rep=300, return_mode="median")) \
        if fused is not None else float("nan")
    rays = size * size
    flops = b.net.flops_per_ray()
    tb = texel_bytes(cfg)
    return {"variant": name, "path": path, "kernel_ms": kernel_ms, "render_ms": render_ms,
            "fps": 1e3 / render_ms, "mflops_per_ray": flops / 1e6, "mask_kept": kept,
            "tflops": flops * rays / (kernel_ms * 1e-3) / 1e12, "texel_bytes_per_ray": tb,
            "gather_tb_s": tb * rays / (kernel_ms * 1e-3) / 1e12}


def sweep(name: str, setup: Setup, configs: list[tuple[int, ...]]) -> list[dict]:
    """Kernel time of a feature-plane variant's fused renderer for launch configurations (rays per
    program, warps, optionally software-pipelining stages), each checked against the default
    configuration's colours."""
    import triton.testing

    from models.backends.r2l import FusedR2LPlanes

    cfg = R2LMLPConfig.from_name(name)
    b, _ = setup.backend(cfg)
    net = b.net
    size = setup.size
    o, d = camera_rays(setup.camera)
    o, d = o.reshape(-1, 3).cuda(), d.reshape(-1, 3).cuda()
    near, far = setup.near, setup.far
    ref = FusedR2LPlanes(net, near, far)(o, d)
    rows = []
    for conf in configs:
        bm, warps, stages = (*conf, 1)[:3]
        try:
            k = FusedR2LPlanes(net, near, far, block_m=bm, num_warps=warps, num_stages=stages)
            err = float((k(o, d) - ref).abs().max())
            ms = float(triton.testing.do_bench(lambda: k(o, d), warmup=30, rep=200, return_mode="median"))
        except Exception as e:  # noqa: BLE001 - a configuration that does not compile is reported
            rows.append({"variant": name, "block_m": bm, "warps": warps, "stages": stages,
                         "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        rows.append({"variant": name, "block_m": bm, "warps": warps, "stages": stages, "kernel_ms": ms,
                     "max_abs_diff": err,
                     "gather_tb_s": texel_bytes(cfg) * size * size / (ms * 1e-3) / 1e12})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="P8x4-512-K128-W256D12-M128,P8x4-512-K64-W256D12,W256D88")
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--json", default=None)
    ap.add_argument("--scene", default=None, help="trained scene: its feature box, occupancy (masks) and first "
                    "test camera")
    ap.add_argument("--sweep", default=None, metavar="BMxWARPS[xSTAGES],...",
                    help="feature-plane variants: also time the fused kernel at these launch configurations "
                    "(rays per program x warps [x pipelining stages], e.g. 64x8,128x4,64x8x2)")
    a = ap.parse_args()
    configs = []
    if a.sweep:
        try:
            configs = [tuple(int(x) for x in c.split("x")) for c in a.sweep.split(",")]
            if any(not 2 <= len(c) <= 3 or min(c) < 1 for c in configs):
                raise ValueError
        except ValueError:
            print(f"error: --sweep {a.sweep}: expected BMxWARPS[xSTAGES],... such as 64x8,128x4x2", file=sys.stderr)
            return 2
    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2
    try:
        setup = Setup(a.size, a.scene)
    except Exception as e:  # noqa: BLE001 - a scene that does not open is a one-line error
        print(f"error: --scene {a.scene}: {e}", file=sys.stderr)
        return 2
    peak = bf16_peak_tflops()
    rows = [measure(v, setup) for v in a.variants.split(",")]
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; bf16 GEMM peak {peak:.0f} TFLOP/s; "
          f"{a.size}x{a.size}")
    print("| variant | path | kernel ms | render ms | FPS | MFLOPs/ray | TFLOP/s | of peak | texel KB/ray | gather TB/s "
          "| mask kept |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['path']} | {r['kernel_ms']:.2f} | {r['render_ms']:.2f} | {r['fps']:.1f} | "
              f"{r['mflops_per_ray']:.2f} | {r['tflops']:.0f} | {100 * r['tflops'] / peak:.1f} % | "
              f"{r['texel_bytes_per_ray'] / 1024:.1f} | {r['gather_tb_s']:.1f} | {100 * r['mask_kept']:.0f} % |")
    sweeps = []
    if configs:
        for v in a.variants.split(","):
            if R2LMLPConfig.from_name(v).encoding == "planes":
                sweeps += sweep(v, setup, configs)
        print("\n| variant | rays/program | warps | stages | kernel ms | gather TB/s | max diff vs default |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in sweeps:
            if "error" in r:
                print(f"| {r['variant']} | {r['block_m']} | {r['warps']} | {r['stages']} | {r['error']} | | |")
            else:
                print(f"| {r['variant']} | {r['block_m']} | {r['warps']} | {r['stages']} | {r['kernel_ms']:.2f} | "
                      f"{r['gather_tb_s']:.2f} | {r['max_abs_diff']:.1e} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"peak_tflops": peak, "rows": rows, "sweep": sweeps}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
