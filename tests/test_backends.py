"""Every registered renderer backend against one contract, on the bundled demo scene (which holds
all of them): what it renders (shapes, range, finite, the outputs it declares), determinism,
chunking that does not change the image, aborting between chunks, the cost it reports, and weight
hot-swaps (the live preview's path): its own weights give the same frame, other weights another,
and swapping back restores it exactly. Then the demo's recorded quality: the distilled backends'
mean PSNR on the demo's test views, rendered here on the CPU, within 0.1 dB of what its
scene.json records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.backends import registry
from models.backends.base import RenderAborted, RenderRequest
from models.cameras import Camera
from models.metrics import psnr
from models.scene import Scene

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo_scene"
pytestmark = pytest.mark.skipif(not (DEMO / "scene.json").exists(), reason="no bundled demo scene")
SIZE = 24


@pytest.fixture(scope="module")
def demo() -> Scene:
    return Scene.load(DEMO)


def small_request(scene: Scene, outputs: frozenset[str], size: int = SIZE, view: int = 0) -> RenderRequest:
    """The demo's test camera ``view`` at size x size pixels (same field of view)."""
    cam = scene.camera_list("test")[view]
    s = size / cam.width
    small = Camera(cam.c2w, size, size, cam.fx * s, cam.fy * s, cam.cx * s, cam.cy * s)
    return RenderRequest.from_camera(small, scene.near, scene.far, outputs=outputs, precision="fp32")


@pytest.fixture(scope="module", params=list(registry.BACKENDS))
def loaded(request, demo):
    b = registry.create(request.param, "cpu")
    ok, why = b.availability(demo)
    assert ok, f"{request.param} unavailable on the demo scene: {why}"
    b.load(demo)
    return b


def test_renders_what_it_declares(loaded, demo):
    b = loaded
    assert "rgb" in b.supported_outputs and b.supported_outputs <= {"rgb", "depth", "acc"}
    res = b.render(small_request(demo, frozenset({"rgb", "depth", "acc"})))
    assert res.rgb.shape == (SIZE, SIZE, 3) and res.rgb.dtype == torch.float32
    assert torch.isfinite(res.rgb).all() and res.rgb.min() >= 0 and res.rgb.max() <= 1
    assert float(res.rgb.std()) > 0.01  # a picture, not a constant
    for out in ("depth", "acc"):
        got = getattr(res, out)
        if out in b.supported_outputs:
            assert got is not None and got.shape == (SIZE, SIZE) and torch.isfinite(got).all()
        else:
            assert got is None
    if res.acc is not None:
        assert res.acc.min() >= 0 and res.acc.max() <= 1 + 1e-5
    assert res.samples_per_ray > 0 and res.flops_per_ray > 0
    assert b.parameter_count() > 0


def test_deterministic_and_chunking_does_not_change_the_image(loaded, demo):
    b = loaded
    req = small_request(demo, frozenset({"rgb"}))
    a = b.render(req).rgb
    assert torch.equal(b.render(req).rgb, a)
    b.chunk_override = 37  # many chunks, one of them ragged
    try:
        torch.testing.assert_close(b.render(req).rgb, a, atol=1e-5, rtol=0)
    finally:
        b.chunk_override = None


def test_aborts_between_chunks(loaded, demo):
    b = loaded
    calls = []

    def abort_on_second_check():
        calls.append(1)
        return len(calls) >= 2

    b.chunk_override = 64
    try:
        with pytest.raises(RenderAborted):
            b.render(small_request(demo, frozenset({"rgb"})), should_abort=abort_on_second_check)
    finally:
        b.chunk_override = None
    assert len(calls) == 2  # stopped at the check that asked, not at the end of the frame


def test_weight_hot_swap(loaded, demo):
    b = loaded
    req = small_request(demo, frozenset({"rgb"}))
    ref = b.render(req).rgb
    state, config = demo.load_model(b.name)
    b.load_state_dict(state, config)
    torch.testing.assert_close(b.render(req).rgb, ref, atol=1e-6, rtol=0)  # its own weights: same frame
    g = torch.Generator().manual_seed(0)
    other = {k: (v + 0.05 * torch.randn(v.shape, generator=g).to(v.dtype) * v.float().std().clamp_min(1e-3).to(v.dtype))
             if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
    b.load_state_dict(other, config)
    assert not torch.allclose(b.render(req).rgb, ref, atol=1e-3)
    b.load_state_dict(state, config)
    torch.testing.assert_close(b.render(req).rgb, ref, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kilonerf", "r2l"])
def test_demo_quality_matches_its_record(demo, tmp_path, name):
    """Regenerate the demo's procedural test views, render them on the CPU, and compare the mean
    PSNR with the one recorded in the demo's scene.json (measured on a GPU in fp16)."""
    from models.data import load_dataset
    from models.data.procedural import ProceduralScene

    recorded = demo.backends[name]["metrics"]["test_psnr"]
    data_dir = ProceduralScene().write_dataset(tmp_path / "data", size=200, views=(100, 4, 8))
    test = load_dataset(data_dir).splits["test"]
    b = registry.create(name, "cpu")
    b.load(demo)
    values = []
    for i in range(len(test)):
        cam = Camera(test.c2w[i], test.width, test.height, *test.intrinsics[i].tolist())
        req = RenderRequest.from_camera(cam, demo.near, demo.far, outputs=frozenset({"rgb"}), precision="fp32",
                                        background=tuple(demo.background))
        values.append(psnr(b.render(req).rgb, test.images[i][..., :3]))
    mean = sum(values) / len(values)
    print(f"\n{name}: {mean:.3f} dB on the CPU, recorded {recorded:.3f} dB")
    assert abs(mean - recorded) < 0.1, (name, mean, recorded)
