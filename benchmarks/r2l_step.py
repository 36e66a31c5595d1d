"""Training-step throughput of R2L students: rays/s and achieved TFLOP/s against the GPU's peak.

One step = encoding (with jitter), forward, loss, backward and the fused Adam update, on random
rays through the scene box, exactly as ``R2LDistillJob.train_step`` runs it (minus the teacher and
the hard-example pool). A variant with an occupancy mask ("-M128") gets a central ellipsoid of the
box as its occupied space, ``--mask-kept`` of the mask's cells (default 7 %, what the teacher's grid
keeps of lego; 1 keeps every cell). FLOPs per ray = 3 x the network's forward FLOPs (forward + backward, the
usual 1 + 2 rule; the encoding and the plane lookups are not counted). The peak is measured in the
same process: a bf16 8192^3 matrix product on random data.

    python benchmarks/r2l_step.py [--variants P8x4-512-K32-W256D12,W256D88] [--batch 65536]
        [--steps 30] [--paths default,torch,compile] [--mask-kept 0.07] [--json FILE]

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

from models.devices import gemm_peak_tflops  # noqa: E402
from models.fields.r2l_mlp import R2LMLP, R2LMLPConfig  # noqa: E402


PROFILE = False


def bf16_peak_tflops() -> float:
    return gemm_peak_tflops(torch.device("cuda"))


def copy_bandwidth_tbs(nbytes: int = 4 << 30, reps: int = 10) -> float:
    x = torch.empty(nbytes // 2, device="cuda", dtype=torch.float16).normal_()
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * nbytes * reps / (time.perf_counter() - t) / 1e12


def ellipsoid_mask(resolution: int, kept: float) -> torch.Tensor:
    """(r, r, r) uint8: the cells inside the centred ellipsoid (semi-axes in proportion to the box)
    holding ``kept`` of the cells; 1 keeps every cell."""
    if kept >= 1.0:
        return torch.ones(resolution, resolution, resolution, dtype=torch.uint8)
    ax = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 - 1
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    radius = (3 * kept / (4 * torch.pi)) ** (1 / 3) * 2  # the ball's volume fraction of the [-1, 1]^3 cube
    return (x * x + y * y + z * z <= radius * radius).to(torch.uint8)


def time_steps(cfg: R2LMLPConfig, batch: int, steps: int, path: str, mask_kept: float = 0.07) -> dict:
    torch.manual_seed(0)
    net = R2LMLP(cfg).cuda()
    kept = None
    if cfg.encoding == "planes":
        net.set_box(torch.tensor([[-0.7, -1.2, -0.4], [0.7, 1.2, 1.1]]))
        net.planes.accel = "torch" if path == "torch" else "triton"
    if cfg.mask_resolution:
        net.mask.copy_(ellipsoid_mask(cfg.mask_resolution, mask_kept).to(net.mask.device))
        kept = round(float(net.mask.float().mean()), 4)
    groups = [{"params": net.mlp_parameters(), "lr": 5e-4}]
    if net.grid_parameters():
        groups.append({"params": net.grid_parameters(), "lr": 5e-2})
    opt = torch.optim.Adam(groups, fused=True)
    mlp = torch.compile(net) if path == "compile" else net
    g = torch.Generator(device="cuda").manual_seed(0)
    o = torch.nn.functional.normalize(torch.randn(batch, 3, device="cuda"), dim=-1) * 4.0
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn(batch, 3, device="cuda"), dim=-1)
    near, far = torch.full((batch,), 2.0, device="cuda"), torch.full((batch,), 6.0, device="cuda")
    target = torch.rand(batch, 3, device="cuda")

    def step():
        enc = net.encode(o, d, near, far, perturb=True, generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = mlp(enc)
        loss = ((pred.float() - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    if PROFILE:
        from torch.profiler import ProfilerActivity, profile

        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        print(f"== {cfg.name} {path}: 5 steps")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    flops = 3 * net.flops_per_ray() * batch
    return {"variant": cfg.name, "path": path, "batch": batch, "ms_per_step": round(ms, 3),
            "rays_per_s": round(batch / ms * 1e3), "tflops": round(flops / ms / 1e9, 1),
            "first_step_s": round(first, 1), "mflop_per_ray_train": round(3 * net.flops_per_ray() / 1e6, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "mask_kept": kept}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="P8x4-512-K128-W256D12-M128,W256D88")
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--paths", default="default,torch", help="default (Triton plane kernels), torch, compile")
    ap.add_argument("--mask-kept", type=float, default=0.07,
                    help="fraction of the occupancy mask's cells kept for the -M variants (1: all)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of 5 steps per row")
    a = ap.parse_args()
    global PROFILE
    PROFILE = a.profile
    if not 0.0 < a.mask_kept <= 1.0:
        print(f"error: --mask-kept must be in (0, 1], got {a.mask_kept}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: benchmarks/r2l_step.py needs CUDA", file=sys.stderr)
        return 2
    peak, bw = bf16_peak_tflops(), copy_bandwidth_tbs()
    rows = []
    for name in a.variants.split(","):
        cfg = R2LMLPConfig.from_name(name)
        for path in a.paths.split(","):
            if path == "torch" and cfg.encoding != "planes":
                continue  # the PE variants have one eager path ("default")
            try:
                rows.append(time_steps(cfg, a.batch, a.steps, path, a.mask_kept))
            except Exception as e:  # noqa: BLE001 - report and go on with the other rows
                rows.append({"variant": name, "path": path, "error": f"{type(e).__name__}: {e}"[:300]})
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    dev = torch.cuda.get_device_name()
    print(f"\n{dev}, torch {torch.__version__}; measured peaks: bf16 GEMM {peak:.0f} TFLOP/s, copy {bw:.2f} TB/s\n")
    print("| variant | path | batch | mask kept | ms/step | rays/s | MFLOP/ray (train) | TFLOP/s | % of peak | first step s "
          "| peak GiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['path']} | | | | | | | | | {r['error']} |")
            continue
        kept = "–" if r["mask_kept"] is None else f"{100 * r['mask_kept']:.1f} %"
        print(f"| {r['variant']} | {r['path']} | {r['batch']} | {kept} | {r['ms_per_step']} | {r['rays_per_s'] / 1e6:.2f} M | "
              f"{r['mflop_per_ray_train']} | {r['tflops']} | {100 * r['tflops'] / peak:.1f} | {r['first_step_s']} | "
              f"{r['peak_mem_gib']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "bf16_peak_tflops": peak,
                                            "copy_tbs": bw, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
