"""Torch ops per pass of KiloNeRF's marching loop, by source line (CPU, no GPU needed).

On the GPU the KiloNeRF frame is bound by the CPU launching the marching loop's small ops (see
docs/benchmarks.md), so the number of ops dispatched per pass is the figure to push down. This
counts every op dispatched from ``models/`` while rendering a small frame of a random grid
(the test suite's ``random_field``), grouped by file and line.

    .venv/bin/python benchmarks/kilonerf_op_count.py                 # torch network path
    TRITON_INTERPRET=1 PYTHONPATH=/path/to/triton \\
      .venv/bin/python benchmarks/kilonerf_op_count.py --fused       # the fused network kernel
    TRITON_INTERPRET=1 PYTHONPATH=/path/to/triton \
      .venv/bin/python benchmarks/kilonerf_op_count.py --march       # + the Triton marcher

Ops inside the Triton interpreter are not counted (on a GPU a kernel is one launch); each Triton
launch is counted as one op (``triton:<kernel>``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from models.backends.kilonerf import KiloNerfRenderConfig, render_passes  # noqa: E402
from models.occupancy import EssGrid  # noqa: E402
from test_kilonerf import AABB, camera_batch, random_field  # noqa: E402


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.by_line = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        stack = traceback.extract_stack()
        ours = [s for s in stack if f"{ROOT}/models/" in s.filename]
        if ours and not any("triton" in s.filename for s in stack[-8:]):
            s = ours[-1]
            self.by_line[f"{Path(s.filename).relative_to(ROOT)}:{s.lineno}"] += 1
        return func(*args, **(kwargs or {}))


class count_launches:
    """Count each Triton kernel launch as one op (the interpreter runs kernels in numpy)."""

    def __init__(self, counter: OpCounter):
        self.counter, self.saved = counter, None

    def __enter__(self):
        try:
            from triton.runtime.interpreter import InterpretedFunction
        except ImportError:
            return self
        self.saved = (InterpretedFunction, InterpretedFunction.run)
        counter, run = self.counter, InterpretedFunction.run

        def counted(fn, *args, **kwargs):
            counter.by_line[f"triton:{fn.fn.__name__}"] += 1
            return run(fn, *args, **kwargs)

        InterpretedFunction.run = counted
        return self

    def __exit__(self, *exc):
        if self.saved:
            self.saved[0].run = self.saved[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fused", action="store_true", help="the fused Triton kernel (needs TRITON_INTERPRET=1 on CPU)")
    ap.add_argument("--march", action="store_true", help="the fused kernel and the Triton marcher (implies --fused)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    field = random_field(frac=0.8)
    occ = (field.cell_to_net >= 0).repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    ess = EssGrid(AABB, occ)
    o, d, near, far = camera_batch(80, 60)
    cfg = KiloNerfRenderConfig(step_size=0.02)
    marcher = None
    if args.fused or args.march:
        from models.fields.kilonerf_fused import FusedKiloNerf

        weights = FusedKiloNerf(field)
        if args.march:
            from models.backends.kilonerf_march import TritonMarcher

            ess.set_networks(field.cell_to_net)
            marcher = TritonMarcher(ess, field.n_networks)
    else:
        weights = field.pack(torch.float32)
    render_passes(field, ess, o, d, near, far, torch.ones(3), cfg, weights, marcher=marcher)  # warm up
    counter = OpCounter()
    with counter, count_launches(counter):
        out = render_passes(field, ess, o, d, near, far, torch.ones(3), cfg, weights, marcher=marcher)
    passes = int(out["passes"])
    total = sum(counter.by_line.values())
    by_file = collections.Counter()
    for k, v in counter.by_line.items():
        by_file[k.rsplit(":", 1)[0]] += v
    path = "Triton marcher + fused" if args.march else "fused" if args.fused else "torch"
    print(f"{path} path: {passes} passes, {total} ops, {total / passes:.0f} per pass")
    print("| file | ops |\n|---|---|")
    for k, v in by_file.most_common():
        print(f"| {k} | {v} |")
    print("\n| line | ops |\n|---|---|")
    for k, v in counter.by_line.most_common(args.top):
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
