"""A corpus of bad input, run through the real CLI: every case must end in one ``error:`` line
with exit status 2, never a traceback, never exit 0, and never change a file it was not asked to.

    python benchmarks/bad_input_corpus.py [--work DIR] [--markdown FILE]

Builds a tiny procedural dataset and scene (teacher + KiloNeRF, tiny presets, about a minute on
two CPU cores), derives broken copies of them (datasets, manifests, weights, checkpoints, CLI
values, outputs that cannot be written, data-safety cases), runs each case as a new process and
prints one table: class, case, exit status, verdict. Verdicts: ``ok`` (exit 2, one ``error:``
line, no traceback, the user's files unchanged), ``traceback``, ``accepted`` (exit 0 on bad
input), ``other`` (any other exit status or message shape), ``changed`` (a file outside the
command's output changed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


def digest(folder: Path) -> dict[str, str]:
    """File -> sha1 of everything under ``folder`` (to detect changes)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != ".writer.lock":
            out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def edit_json(path: Path, fn) -> None:
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


class Corpus:
    def __init__(self, work: Path):
        self.work = work
        self.rows: list[tuple[str, str, int, str, str]] = []

    def case(self, cls: str, name: str, args: list, watch: list[Path] = (), env=None, expect_rc: int = 2) -> None:
        before = {str(w): digest(w) if w.is_dir() else (w.read_bytes() if w.exists() else None) for w in watch}
        out = run(*args, env=env)
        err = out.stderr.strip()
        if "Traceback" in out.stderr:
            verdict = "traceback"
        elif out.returncode == 0 and expect_rc != 0:
            verdict = "accepted"
        elif out.returncode != expect_rc or (expect_rc == 2 and not (
                err.splitlines()[-1].startswith("error:") and sum(l.startswith("error:") for l in err.splitlines()) == 1)):
            verdict = "other"  # a command may print progress first; its last line must be the one error
        else:
            verdict = "ok"
        for w in watch:
            now = digest(w) if w.is_dir() else (w.read_bytes() if w.exists() else None)
            if now != before[str(w)]:
                verdict = "changed"
        self.rows.append((cls, name, out.returncode, verdict, err.splitlines()[-1][:150] if err else ""))
        print(f"{verdict:10s} {cls:10s} {name}", flush=True)

    def copy(self, src: Path, name: str) -> Path:
        dst = self.work / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        return dst


def build(c: Corpus) -> tuple[Path, Path]:
    data, scene = c.work / "data", c.work / "scene"
    if not (scene / "kilonerf.safetensors").exists():
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(scene, ignore_errors=True)
        for args in (("make-scene", data, "--size", "32", "--views", "20,4,4"),
                     ("train", data, "--out", scene, "--preset", "tiny", "--quiet"),
                     ("distill", scene, "--backend", "kilonerf", "--preset", "tiny", "--quiet")):
            out = run(*args, timeout=900)
            if out.returncode != 0:
                raise SystemExit(f"building the corpus scene failed: {out.stderr[-2000:]}")
    return data, scene


def cli_values(c: Corpus, data: Path, scene: Path) -> None:
    cls = "cli"
    for args in (["train", data, "--out", c.work / "t", "--steps", "-5"], ["train", data, "--out", c.work / "t", "--steps", "0"],
                 ["train", data, "--out", c.work / "t", "--time-budget", "-1"],
                 ["train", data, "--out", c.work / "t", "--time-budget", "nan"],
                 ["train", data, "--out", c.work / "t", "--views", "0"], ["train", data, "--out", c.work / "t", "--views", "-3"],
                 ["train", data, "--out", c.work / "t", "--samples-per-step", "0"],
                 ["train", data, "--out", c.work / "t", "--factor", "0"],
                 ["train", data, "--out", c.work / "t", "--preset", "nonsense"],
                 ["train", data, "--out", c.work / "t", "--views", "1000"],
                 ["distill", scene, "--backend", "r2l", "--variant", "W7D3"],
                 ["distill", scene, "--backend", "r2l", "--batch-rays", "0"],
                 ["distill", scene, "--backend", "r2l", "--set", "lr=fast"],
                 ["distill", scene, "--backend", "r2l", "--set", "no_such_setting=1"],
                 ["train", data, "--out", c.work / "t", "--set", "lr=-1"],
                 ["distill", scene, "--backend", "nerf"],
                 ["eval", scene, "--size", "0"], ["eval", scene, "--max-views", "0"], ["eval", scene, "--max-views", "-1"],
                 ["eval", scene, "--split", "nonsense"], ["eval", scene, "--backend", "nonsense"],
                 ["eval", scene, "--device", "tpu"],
                 ["render", scene, "--out", c.work / "x.avi"], ["render", scene, "--out", c.work / "x.txt"],
                 ["render", scene, "--out", c.work / "o.gif", "--fps", "0"],
                 ["render", scene, "--out", c.work / "o.gif", "--size", "-1"],
                 ["render", scene, "--out", c.work / "o.gif", "--views", "99"],
                 ["render", scene, "--out", c.work / "o.gif", "--views", "a,b"],
                 ["bench", scene, "--repeats", "0"], ["bench", scene, "--views", "0"],
                 ["eval", scene, "--accel", "kilonerf=cuda"], ["eval", scene, "--accel", "nerf=fused"],
                 ["eval", scene, "--accel", "nonsense=torch"], ["bench", scene, "--accel", "torch"],
                 ["render", scene, "--out", c.work / "o.gif", "--accel", "r2l=fused,r2l=torch"],
                 ["make-scene", c.work / "m", "--size", "-1"], ["make-scene", c.work / "m", "--size", "100000"],
                 ["export", scene, "--out", c.work / "e", "--backends", "nonsense"],
                 ["nonsense-command"]):
        c.case(cls, " ".join(str(a).replace(str(c.work) + "/", "") for a in args), args, watch=[scene])


def pipeline_values(c: Corpus, data: Path, scene: Path) -> None:
    """``pipeline``'s stages and ``--set STAGE.KEY=VALUE``: refused before anything is written (no
    new scene folder, the existing scene unchanged)."""
    cls = "cli"
    new = c.work / "p"
    shutil.rmtree(new, ignore_errors=True)
    for args in (["--stages", "nerf"], ["--stages", "r2l,teacher"], ["--stages", "teacher,teacher"],
                 ["--stages", "kilonerf"], ["--set", "lr=1e-3"], ["--stages", "teacher", "--set", "r2l.lr=1e-3"],
                 ["--set", "teacher.no_such_setting=1"], ["--set", "r2l.lr=fast"], ["--set", "kilonerf.steps=0"],
                 ["--preset", "nonsense"]):
        c.case(cls, "pipeline data --out p " + " ".join(args), ["pipeline", data, "--out", new, *args],
               watch=[scene, new])
    c.case(cls, "pipeline data --out scene --stages r2l --set r2l.lr=-1",
           ["pipeline", data, "--out", scene, "--stages", "r2l", "--set", "r2l.lr=-1"], watch=[scene])
    c.case("dataset", "pipeline: missing folder", ["pipeline", c.work / "nowhere", "--out", new, "--preset", "tiny"],
           watch=[new])


def datasets(c: Corpus, data: Path) -> None:
    cls = "dataset"
    c.case(cls, "missing folder", ["train", c.work / "nowhere", "--out", c.work / "t1", "--preset", "tiny"])
    empty = c.work / "empty"
    empty.mkdir(exist_ok=True)
    c.case(cls, "empty folder", ["train", empty, "--out", c.work / "t1", "--preset", "tiny"])

    def broken(name, fn):
        d = c.copy(data, f"ds_{name}")
        fn(d)
        c.case(cls, name, ["train", d, "--out", c.work / f"t_{name}", "--preset", "tiny", "--steps", "1"], watch=[d])

    tj = "transforms_train.json"
    broken("malformed json", lambda d: (d / tj).write_text("{ not json"))
    broken("json nested 200,000 deep", lambda d: (d / tj).write_text("[" * 200000 + "]" * 200000))
    broken("camera_angle_x a string", lambda d: edit_json(d / tj, lambda m: m.update(camera_angle_x="wide")))
    broken("camera_angle_x >= pi", lambda d: edit_json(d / tj, lambda m: m.update(camera_angle_x=3.5)))
    broken("no frames", lambda d: edit_json(d / tj, lambda m: m.update(frames=[])))
    broken("frame file missing", lambda d: edit_json(d / tj, lambda m: m["frames"][0].update(file_path="./train/none")))
    broken("file_path outside the folder", lambda d: edit_json(d / tj, lambda m: m["frames"][0].update(
        file_path="../scene/nerf")))
    broken("absolute file_path", lambda d: edit_json(d / tj, lambda m: m["frames"][0].update(file_path="/etc/hostname")))
    broken("all-zero pose", lambda d: edit_json(d / tj, lambda m: m["frames"][1].update(
        transform_matrix=[[0.0] * 4] * 4)))
    broken("NaN in a pose", lambda d: edit_json(d / tj, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(
        0, float("nan"))))
    broken("corrupt image", lambda d: next((d / "train").glob("*.png")).write_bytes(b"\x89PNG garbage"))
    big = c.copy(data, "ds_big_image")
    c.case(cls, "image over the pixel limit", ["train", big, "--out", c.work / "t_big", "--preset", "tiny"],
           env={"NSV_MAX_IMAGE_PIXELS": "100"})


def scenes(c: Corpus, data: Path, scene: Path) -> None:
    cls = "scene"

    def broken(name, fn, args=("eval", "SCENE", "--max-views", "1")):
        s = c.copy(scene, f"sc_{name.replace(' ', '_').replace('/', '_')}")
        fn(s)
        c.case(cls, name, [s if a == "SCENE" else data if a == "DATA" else a for a in args], watch=[s])

    broken("no scene.json", lambda s: (s / "scene.json").unlink())
    broken("malformed scene.json", lambda s: (s / "scene.json").write_text("{"))
    broken("wrong format", lambda s: edit_json(s / "scene.json", lambda m: m.update(format="other")))
    broken("future version", lambda s: edit_json(s / "scene.json", lambda m: m.update(version=99)))
    broken("weights ../../x", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"].update(
        weights="../../x.safetensors")))
    broken("weights absolute", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"].update(
        weights="/etc/hostname")))
    broken("weights 5", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"].update(weights=5)))
    broken("weights null", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"].update(weights=None)))
    broken("mlp width a string", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"]["config"]["mlp"]
                                                      .update(width="wide")))
    broken("unknown network setting", lambda s: edit_json(s / "scene.json", lambda m: m["backends"]["nerf"]
                                                           ["config"]["mlp"].update(future_knob=1)))
    broken("background of 2 values", lambda s: edit_json(s / "scene.json", lambda m: m.update(background=[1, 1])))
    broken("corrupt weights file", lambda s: (s / "nerf.safetensors").write_bytes(b"garbage"))
    broken("truncated weights file", lambda s: (s / "nerf.safetensors").write_bytes(
        (scene / "nerf.safetensors").read_bytes()[:1000]))

    def nan_weights(s):
        import torch
        from safetensors.torch import load_file, save_file

        t = load_file(str(s / "nerf.safetensors"))
        k = next(k for k, v in t.items() if v.is_floating_point())
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan")
        save_file(t, str(s / "nerf.safetensors"))
        del torch

    broken("NaN weights", nan_weights)

    def crafted_kilonerf(s):
        from safetensors.torch import load_file, save_file

        t = load_file(str(s / "kilonerf.safetensors"))
        key = next(k for k in t if k.endswith("cell_to_net"))
        t[key] = t[key].clone()
        t[key].view(-1)[0] = 10**6
        save_file(t, str(s / "kilonerf.safetensors"))

    broken("KiloNeRF cell_to_net of 10^6", crafted_kilonerf, ("eval", "SCENE", "--backend", "kilonerf", "--max-views", "1"))

    def flat_occupancy(s):
        from safetensors.torch import load_file, save_file

        t = load_file(str(s / "occupancy.safetensors"))
        t["occupied"] = t["occupied"].reshape(-1)
        save_file(t, str(s / "occupancy.safetensors"))

    broken("1-D occupancy grid", flat_occupancy)
    broken("checkpoint of another preset", lambda s: None, ("train", "DATA", "--out", "SCENE", "--preset", "quick",
                                                           "--steps", "1"))
    broken("empty checkpoint file", lambda s: (s / "checkpoints" / "teacher.safetensors").write_bytes(b""),
           ("train", "DATA", "--out", "SCENE", "--preset", "tiny"))


def outputs(c: Corpus, scene: Path) -> None:
    cls = "output"
    afile = c.work / "a_file"
    afile.write_text("x")
    cases = [("eval --json into a folder", ["eval", scene, "--max-views", "1", "--json", c.work]),
             ("eval --json under a file", ["eval", scene, "--max-views", "1", "--json", afile / "e.json"]),
             ("export --out a file", ["export", scene, "--out", afile]),
             ("render --out under a file", ["render", scene, "--out", afile / "frames", "--frames", "1"]),
             ("bench --out a file", ["bench", scene, "--out", afile, "--views", "1"]),
             ("train --out a file", ["train", c.work / "data", "--out", afile, "--preset", "tiny"]),
             ("train --out /dev/null", ["train", c.work / "data", "--out", "/dev/null", "--preset", "tiny"]),
             ("eval --json on a full disk (/dev/full)", ["eval", scene, "--max-views", "1", "--json", "/dev/full"]),
             ("export --out where no folder can be made", ["export", scene, "--out", "/proc/nsv-corpus"])]
    if os.geteuid() != 0:  # root writes into read-only folders: these cases need an ordinary user
        ro = c.work / "readonly"
        ro.mkdir(exist_ok=True)
        os.chmod(ro, 0o555)
        cases += [("eval --json in a read-only folder", ["eval", scene, "--max-views", "1", "--json", ro / "e.json"]),
                  ("export --out inside a read-only folder", ["export", scene, "--out", ro / "e"]),
                  ("render into a read-only folder", ["render", scene, "--out", ro / "frames", "--frames", "1"])]
    for name, args in cases:
        c.case(cls, name, args, watch=[scene, afile])
    if not Path("/dev/full").is_char_device() or not Path("/dev/null").is_char_device():
        raise SystemExit("a case replaced /dev/full or /dev/null: stop here and restore it")
    if os.geteuid() != 0:
        os.chmod(c.work / "readonly", 0o755)


def safety(c: Corpus, data: Path, scene: Path) -> None:
    cls = "safety"
    c.case(cls, "export S --out S", ["export", scene, "--out", scene], watch=[scene])
    c.case(cls, "export S --out S/inner", ["export", scene, "--out", scene / "inner"], watch=[scene])
    other = c.copy(scene, "other_scene")
    c.case(cls, "export A --out B (a scene) without --force", ["export", scene, "--out", other], watch=[scene, other])
    odata = c.work / "other_data"
    if not odata.exists():
        run("make-scene", odata, "--size", "24", "--views", "10,2,2")
    c.case(cls, "distill with another dataset", ["distill", scene, "--backend", "r2l", "--preset", "tiny", "--data",
                                                 odata], watch=[scene])
    c.case(cls, "train another dataset into a scene", ["train", odata, "--out", scene, "--preset", "tiny"],
           watch=[scene])
    locked = c.copy(scene, "locked_scene")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (locked / ".writer.lock").write_text(json.dumps({"pid": holder.pid, "what": "a training job"}))
    try:
        c.case(cls, "a second writer", ["distill", locked, "--backend", "r2l", "--preset", "tiny"], watch=[locked])
    finally:
        holder.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="nsv-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    c = Corpus(work)
    data, scene = build(c)
    cli_values(c, data, scene)
    pipeline_values(c, data, scene)
    datasets(c, data)
    scenes(c, data, scene)
    outputs(c, scene)
    safety(c, data, scene)
    counts: dict[str, int] = {}
    for row in c.rows:
        counts[row[3]] = counts.get(row[3], 0) + 1
    lines = ["| class | case | exit | verdict | last line on stderr |", "|---|---|---:|---|---|"]
    lines += [f"| {cls} | {name} | {rc} | {v} | {msg.replace('|', '/')} |" for cls, name, rc, v, msg in c.rows]
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print("\n".join(lines))
    print(f"\n{len(c.rows)} cases: {summary}")
    if a.markdown:
        Path(a.markdown).write_text("\n".join(lines) + f"\n\n{len(c.rows)} cases: {summary}\n")
    return 0 if counts.get("ok", 0) == len(c.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
