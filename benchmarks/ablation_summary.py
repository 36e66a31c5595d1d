"""Summarise time-bounded distillation ablations: validation PSNR against training time, and the best.

    python benchmarks/ablation_summary.py FOLDER

FOLDER holds, per ablation NAME, ``NAME.jsonl`` (the ``--events`` file of ``main.py distill``) and
``NAME.args`` (its distill arguments), as ``benchmarks/r2l_queue.sh``'s stage ``ablate`` writes
them. Prints one line per ablation (each validation as PSNR@seconds, and the PSNR at a common
time T, linearly interpolated between validations; T is the earliest last validation of all runs)
and writes the arguments of the ablation with the highest PSNR at T to ``FOLDER/best_args`` (ties:
the first listed), so a slower configuration that validates later is not favoured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def validations(events: Path) -> list[tuple[float, float]]:
    """(seconds, PSNR) of every validation event of one run."""
    out = []
    for line in events.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run stopped while writing its last line
        if row.get("kind") == "validation" and row.get("psnr") is not None:
            out.append((float(row["elapsed_s"]), float(row["psnr"])))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("error: usage: ablation_summary.py FOLDER (a folder of NAME.jsonl and NAME.args)", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    rows = []
    for args_file in sorted(folder.glob("*.args"), key=lambda p: p.stat().st_mtime):
        name = args_file.stem
        events = folder / f"{name}.jsonl"
        vals = validations(events) if events.exists() else []
        rows.append((name, args_file.read_text().strip(), vals))
    finished = [vals for _, _, vals in rows if vals]
    if not finished:
        print("no ablation reached a validation; best_args not written")
        return 1
    common = min(vals[-1][0] for vals in finished)
    best = None
    for name, args, vals in rows:
        curve = "  ".join(f"{p:.2f}@{t:.0f}s" for t, p in vals) or "no validation"
        at = psnr_at(vals, common)
        print(f"{name:>12}  at {common:.0f} s: {'-' if at is None else f'{at:.2f}'}   {curve}   [{args}]")
        if at is not None and (best is None or at > best[2]):
            best = (name, args, at)
    tmp = folder / "best_args.tmp"
    tmp.write_text(best[1] + "\n")
    tmp.replace(folder / "best_args")
    print(f"best: {best[0]} ({best[2]:.2f} dB at {common:.0f} s): {best[1]}")
    return 0


def psnr_at(vals: list[tuple[float, float]], t: float) -> float | None:
    """PSNR at time t, linear between the validations around it (None before the first)."""
    if not vals or t < vals[0][0]:
        return None
    for (t0, p0), (t1, p1) in zip(vals, vals[1:]):
        if t0 <= t <= t1:
            return p0 + (p1 - p0) * (t - t0) / max(t1 - t0, 1e-9)
    return vals[-1][1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
