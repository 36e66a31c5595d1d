"""Sparse-view benchmark: plain NeRF against the regularised teachers, same budget, 3 / 6 / 9 views.

    python benchmarks/sparse_views.py DATA OUT [--views 3,6,9] [--modes plain,regnerf,freenerf,both]
        [--budget 360] [--preset standard] [--factor 8] [--device cuda]

For every view count and mode it runs ``main.py train DATA --views N [--sparse-reg MODE]
--time-budget BUDGET`` into ``OUT/v{N}_{mode}`` (the protocol of RegNeRF and FreeNeRF for LLFF:
every 8th image held out, the N training views spread evenly over the rest, 1/8 resolution with
``--factor 8``, NDC), evaluates the test views (``main.py eval --split test``), renders their depth
into ``OUT/depth_v{N}_{mode}/`` for a look, and prints one table (PSNR per test view, mean PSNR
and SSIM, steps done in the budget), also written to ``OUT/sparse_views.md`` and ``.json``. The
runs go one after the other, so each has the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main_py(*args) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"main.py {' '.join(map(str, args))} failed:\n{out.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--views", default="3,6,9")
    ap.add_argument("--modes", default="plain,regnerf,freenerf,both")
    ap.add_argument("--budget", type=float, default=360.0, help="seconds of training per run")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--factor", type=int, default=None, help="LLFF: images_N (8 for the papers' protocol)")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(v) for v in a.views.split(",")]:
        for mode in a.modes.split(","):
            name = f"v{n}_{mode}"
            scene = out / name
            args = ["train", a.data, "--out", scene, "--views", n, "--time-budget", a.budget, "--preset", a.preset,
                    "--restart", "--quiet"]
            if mode != "plain":
                args += ["--sparse-reg", mode]
            if a.factor:
                args += ["--factor", a.factor]
            if a.device:
                args += ["--device", a.device]
            main_py(*args)
            dev = ["--device", a.device] if a.device else []
            main_py("eval", scene, "--split", "test", "--json", out / f"{name}.json", "--quiet", *dev)
            main_py("render", scene, "--path", "test", "--output", "depth", "--out", out / f"depth_{name}", "--quiet",
                    *dev)
            report = json.loads((out / f"{name}.json").read_text())["backends"]["nerf"]
            steps = json.loads((scene / "scene.json").read_text())["backends"]["nerf"]["metrics"]["teacher"]["steps"]
            rows.append({"views": n, "mode": mode, "steps": steps, "per_view": [v["psnr"] for v in report["views"]],
                         "names": [v["name"] for v in report["views"]], "psnr": report["psnr"],
                         "ssim": report["ssim"]})
            print(f"{name}: {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}, {steps} steps", flush=True)
    names = rows[0]["names"] if rows else []
    lines = ["| views | mode | steps | " + " | ".join(names) + " | mean PSNR | mean SSIM |",
             "|---:|---|---:|" + "---:|" * len(names) + "---:|---:|"]
    for r in rows:
        lines.append(f"| {r['views']} | {r['mode']} | {r['steps']} | " + " | ".join(f"{p:.2f}" for p in r["per_view"])
                     + f" | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    (out / "sparse_views.md").write_text(table + "\n")
    (out / "sparse_views.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
