"""GL canvas pieces: letterboxing, shader loading, display of odd-sized frames, GL cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viewer.gl_canvas import BACKGROUND, GLCanvas, letterbox, load_shader_source
from viewer.render_worker import Frame, describe_error


def test_letterbox_keeps_the_aspect_and_centres():
    assert letterbox(800, 600, 800 / 600) == (0, 0, 800, 600)
    assert letterbox(800, 600, 1.0) == (100, 0, 600, 600)  # pillarbox
    assert letterbox(600, 800, 2.0) == (0, 250, 600, 300)  # letterbox
    assert letterbox(0, 10, 1.0) == (0, 0, 0, 10)


def test_shaders_load_by_name_with_includes():
    src = load_shader_source("image.frag")
    assert src.startswith("#version 330 core")
    assert "#include" not in src and "vec3 turbo(float x)" in src
    assert "u_divider" in load_shader_source("split.frag")


def test_describe_error_advises_on_out_of_memory():
    msg = describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "out of memory" in msg.lower() and "smaller" in msg
    assert describe_error(ValueError("bad\nsecond line")) == "ValueError: bad"


def _grab(canvas) -> np.ndarray:
    img = canvas.grabFramebuffer().convertToFormat(canvas.grabFramebuffer().Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return a.reshape(img.height(), img.width(), 3)


@pytest.mark.parametrize("split", [False, True])
def test_frames_are_scaled_with_letterbox_and_split(qtbot, split):
    canvas = GLCanvas()
    qtbot.addWidget(canvas)
    canvas.setFixedSize(80, 40)
    canvas.show()
    qtbot.waitExposed(canvas)
    # a 10x10 frame of a 1:1 view, pure red (and pure blue on the right in split view)
    red = np.zeros((10, 10, 3), np.float32)
    red[..., 0] = 1
    blue = np.zeros((10, 10, 3), np.float32)
    blue[..., 2] = 1
    images = [red, blue] if split else [red]
    canvas.set_frame(Frame(images, "rgb", 10, 10, 40, 40, ("a", "b")[: len(images)], 0, 0, 0))
    qtbot.waitUntil(lambda: canvas.frames_painted > 0, timeout=5_000)
    fmt = canvas.context().format()
    assert (fmt.majorVersion(), fmt.minorVersion()) >= (3, 3)
    assert fmt.profile() == fmt.OpenGLContextProfile.CoreProfile
    px = _grab(canvas).astype(int)
    bg = np.round(np.array(BACKGROUND) * 255).astype(int)
    assert np.abs(px[20, 5] - bg).max() <= 1 and np.abs(px[20, 75] - bg).max() <= 1  # side bars
    assert tuple(px[20, 25]) == (255, 0, 0)  # left half of the 40x40 image
    assert tuple(px[20, 55]) == ((0, 0, 255) if split else (255, 0, 0))
    canvas.close()
    canvas.deleteLater()
