"""kill -9 at random moments of train, distill and export: nothing a user has is ever lost.

Nine kills across the three commands on the tiny procedural scene: train and export at moments
drawn from a fixed random schedule, distill a fixed random delay after its checkpoint advanced (so
that moments after a checkpoint happen however loaded the machine is). After each: the scene folder still loads (or was never created), no hidden work folder is left
beside an export, and the killed job resumes from its last checkpoint when run again, losing at
most one checkpoint interval (``--checkpoint-every 1`` here): a resumed job's checkpoint step never
goes back.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_scene
from models.scene import Scene
from models.training.engine import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _start(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "main.py", *args, "--quiet"] if args[0] != "export" else
                            [sys.executable, "main.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after_checkpoint(proc, ckpt: Path, delay: float, timeout: float = 600.0) -> bool:
    """kill -9 ``delay`` seconds after ``ckpt`` holds a later step than it did at the start, unless
    the job ended first; True if it was killed."""
    before = _step(ckpt)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and _step(ckpt) <= before:
        time.sleep(0.05)
    return _kill_after(proc, delay)


def _step(ckpt: Path) -> int:
    """The checkpoint's step, -1 while there is none."""
    try:
        found = read_checkpoint(ckpt)
    except Exception:  # noqa: BLE001 - replaced by a rename while it was read: look again later
        return -1
    return -1 if found is None else found[0]


def _kill_after(proc, seconds: float) -> bool:
    """kill -9 after ``seconds`` unless it ended first; True if it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


@pytest.mark.slow
def test_kill_minus_nine_at_nine_moments(procedural_dataset, tiny_teacher_scene, tmp_path):
    rng = random.Random(20261201)
    kills = 0
    # train: 3 moments; every kill leaves a loadable scene (or none yet) and a resumable job
    scene = tmp_path / "trained"
    for _ in range(3):
        killed = _kill_after(_start("train", str(procedural_dataset), "--out", str(scene), "--preset", "tiny",
                                    "--steps", "150", "--checkpoint-every", "1"), rng.uniform(1.0, 6.0))
        kills += killed
        if (scene / "scene.json").exists():
            Scene.load(scene)
        ckpt = scene / "checkpoints" / "teacher.safetensors"
        if ckpt.exists():
            read_checkpoint(ckpt)  # complete, never half written
    # distill: 4 moments on a copy of the trained teacher, each after its checkpoint advanced
    distilled = copy_scene(tiny_teacher_scene, tmp_path / "distilled")
    ckpt = distilled / "checkpoints" / "r2l.safetensors"
    steps_seen = []
    for _ in range(4):
        killed = _kill_after_checkpoint(_start("distill", str(distilled), "--backend", "r2l", "--preset", "tiny",
                                               "--steps", "150", "--checkpoint-every", "1"), ckpt, rng.uniform(0.0, 0.8))
        kills += killed
        s = Scene.load(distilled)
        if ckpt.exists():
            steps_seen.append(read_checkpoint(ckpt)[0])
        if "r2l" in s.backends:
            s.load_model("r2l")
    assert steps_seen == sorted(steps_seen)  # resumed runs only ever add steps
    # export: 2 moments, replacing an existing scene (the riskiest case)
    target = copy_scene(tiny_teacher_scene, tmp_path / "target")
    for _ in range(2):
        killed = _kill_after(_start("export", str(distilled), "--out", str(target), "--force"), rng.uniform(0.5, 3.0))
        kills += killed
        proc = _start("doctor", str(target))  # the next command beside it cleans up what a kill left
        proc.wait()
        Scene.load(target)
    _start("export", str(distilled), "--out", str(tmp_path / "probe")).wait()  # cleans up beside target too
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert kills >= 5, kills  # most moments fell inside a running job
    # every job still completes from where it was
    for args in (("train", str(procedural_dataset), "--out", str(scene), "--preset", "tiny", "--steps", "150"),
                 ("distill", str(distilled), "--backend", "r2l", "--preset", "tiny", "--steps", "150")):
        proc = _start(*args)
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-2000:]
    assert Scene.load(scene).backends["nerf"]["metrics"]["teacher"]["steps"] == 150
    assert Scene.load(distilled).backends["r2l"]["metrics"]["distill"]["steps"] == 150
    assert max(steps_seen, default=0) > 0  # some kills came after a checkpoint, and those jobs resumed from it
