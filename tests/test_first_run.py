"""The README's run command opens the bundled demo scene and shows a real frame.

Launches the real entry point (`python main.py`, no arguments) in a subprocess on the Xvfb
display that pytest-xvfb started, lets it run for a few seconds, saves what the GL canvas shows
and checks the frame is the demo scene, not a blank or an error screen.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo_scene"


@pytest.mark.skipif(not (DEMO / "scene.json").exists(), reason="no bundled demo scene in assets/demo_scene")
def test_main_opens_demo_scene_and_draws_it(tmp_path, qapp):  # qapp: makes pytest-xvfb provide DISPLAY
    import imageio.v3 as iio

    shot = tmp_path / "first_run.png"
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # QOpenGLWidget needs xcb (Xvfb), not offscreen
    out = subprocess.run([sys.executable, "main.py", "view", "--quit-after", "12", "--screenshot", str(shot)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.exists(), out.stderr[-2000:]
    img = iio.imread(shot)[..., :3].astype(np.float32) / 255.0
    # the demo scene on a white background: mostly white, with a coloured object in the middle
    h, w = img.shape[:2]
    centre = img[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
    assert img.std() > 0.05, "blank frame"
    assert (centre.max(-1) - centre.min(-1)).mean() > 0.05, "no coloured content in the middle of the frame"
    assert np.mean(img.min(-1) > 0.9) > 0.2, "no white background: not the demo scene"
