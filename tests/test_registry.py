"""The backend registry's execution-path option (``accel``): every backend's ``ACCEL_CHOICES``,
``create``/``load_backend`` with a path, ``parse_accel`` for ``--accel BACKEND=PATH[,...]``, the
option reaching the backend from ``eval``, ``render`` and ``bench``, bad values answered with one
``error:`` line and exit status 2, and environment variables playing no part in the choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_viewer_compare import make_compare_scene

from models.backends import registry
from models.backends.base import RenderRequest
from models.backends.kilonerf import KiloNerfBackend
from models.backends.nerf import NerfBackend
from models.backends.r2l import R2LBackend
from models.cli import build_parser, run
from models.scene import Scene

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo_scene"
needs_demo = pytest.mark.skipif(not (DEMO / "scene.json").exists(), reason="no bundled demo scene")


@pytest.fixture(scope="module")
def nerf_scene(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("accel")
    return make_compare_scene(base / "scene", base / "data")


def test_every_backend_lists_its_paths_auto_first():
    assert NerfBackend.ACCEL_CHOICES == ("auto", "torch")
    assert KiloNerfBackend.ACCEL_CHOICES == ("auto", "fused", "fused-net", "torch")
    assert R2LBackend.ACCEL_CHOICES == ("auto", "fused", "torch", "compile")
    for name, cls in registry.BACKENDS.items():
        assert registry.accel_choices(name) == cls.ACCEL_CHOICES and cls.ACCEL_CHOICES[0] == "auto"


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_create_sets_every_path_and_the_cpu_renders_in_torch(name):
    for accel in registry.accel_choices(name):
        b = registry.create(name, "cpu", accel=accel)
        assert b.accel == accel and b.active_path() == "torch-fp32"  # the CPU has only the float32 torch path
    assert registry.create(name, "cpu").accel == "auto"


def test_an_unknown_path_is_a_value_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"kilonerf has no execution path 'cuda-graphs' "
                                         r"\(choose from auto, fused, fused-net, torch\)"):
        registry.create("kilonerf", "cpu", accel="cuda-graphs")
    with pytest.raises(ValueError, match=r"r2l has no execution path 'fused-net' \(choose from auto, fused, torch, "
                                         r"compile\)"):
        R2LBackend("cpu", accel="fused-net")
    with pytest.raises(ValueError, match=r"nerf has no execution path 'fused' \(choose from auto, torch\)"):
        NerfBackend("cpu", accel="fused")
    with pytest.raises(ValueError, match="unknown backend 'instant-ngp'"):
        registry.create("instant-ngp", "cpu", accel="torch")


def test_parse_accel():
    assert registry.parse_accel("kilonerf=torch,r2l=fused") == {"kilonerf": "torch", "r2l": "fused"}
    assert registry.parse_accel(" nerf = torch , ") == {"nerf": "torch"}
    for text, message in (("kilonerf=cuda", r"kilonerf has no execution path 'cuda' \(choose from auto, fused, "),
                          ("gaussians=torch", r"unknown backend 'gaussians' \(known: nerf, kilonerf, r2l\)"),
                          ("torch", "expected BACKEND=PATH such as kilonerf=torch, got 'torch'"),
                          ("kilonerf=", "expected BACKEND=PATH"), ("=torch", "expected BACKEND=PATH"),
                          ("kilonerf=torch,kilonerf=fused", "kilonerf is given twice"),
                          ("", "expected BACKEND=PATH"), (",", "expected BACKEND=PATH")):
        with pytest.raises(ValueError, match=message):
            registry.parse_accel(text)


@pytest.mark.parametrize("variable, name", [("NSV_KILONERF_ACCEL", "kilonerf"), ("NSV_R2L_ACCEL", "r2l")])
def test_environment_variables_have_no_effect(monkeypatch, variable, name):
    for value in ("torch", "no-such-path"):
        monkeypatch.setenv(variable, value)
        assert registry.create(name, "cpu").accel == "auto"
        assert registry.BACKENDS[name]("cpu").accel == "auto"
        assert registry.create(name, "cpu", accel="fused").accel == "fused"


@pytest.mark.parametrize("command", ["eval", "render", "bench"])
@pytest.mark.parametrize("value, message", [
    ("kilonerf=cuda", ("argument --accel: kilonerf has no execution path 'cuda' (choose from auto, fused, "
                       "fused-net, torch)")),
    ("gaussians=torch", "argument --accel: unknown backend 'gaussians' (known: nerf, kilonerf, r2l)"),
    ("fused", "argument --accel: expected BACKEND=PATH such as kilonerf=torch, got 'fused'"),
    ("r2l=fused,r2l=torch", "argument --accel: r2l is given twice"),
])
def test_a_bad_accel_value_is_one_error_line_and_status_2(command, value, message, tmp_path, capsys):
    argv = [command, str(tmp_path / "no-scene"), "--accel", value]
    if command == "render":
        argv += ["--out", str(tmp_path / "o.gif")]
    with pytest.raises(SystemExit) as e:
        run(argv, build_parser())
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {command}: {message}"]


def test_eval_passes_the_path_on_and_reports_it(nerf_scene, tmp_path, capsys):
    out = tmp_path / "e.json"
    argv = ["eval", str(nerf_scene), "--max-views", "1", "--size", "16", "--device", "cpu", "--quiet",
            "--accel", "nerf=torch,kilonerf=fused", "--json", str(out)]  # kilonerf: not in this scene, ignored
    assert run(argv, build_parser()) == 0
    rep = json.loads(out.read_text())["backends"]["nerf"]
    assert (rep["accel"], rep["path"]) == ("torch", "torch-fp32")
    assert "execution path torch-fp32" in capsys.readouterr().out
    assert run(argv[:-4] + ["--json", str(out)], build_parser()) == 0  # no --accel: auto
    assert json.loads(out.read_text())["backends"]["nerf"]["accel"] == "auto"


def test_bench_passes_the_path_on_and_records_it(nerf_scene, tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", str(nerf_scene), "--backends", "nerf", "--size", "16", "--views", "1", "--timing-views", "1",
            "--repeats", "1", "--device", "cpu", "--quiet", "--accel", "nerf=torch", "--out", str(out)]
    assert run(argv, build_parser()) == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert (row["accel"], row["path"]) == ("torch", "torch-fp32")


@needs_demo
def test_render_passes_the_path_on(monkeypatch, tmp_path):
    made = []
    load = registry.load_backend

    def spy(*args, **kwargs):
        made.append(load(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(registry, "load_backend", spy)
    monkeypatch.setenv("NSV_KILONERF_ACCEL", "no-such-path")  # ignored
    base = ["render", str(DEMO), "--backend", "kilonerf", "--frames", "1", "--size", "8", "--device", "cpu", "--quiet"]
    assert run([*base, "--out", str(tmp_path / "a"), "--accel", "kilonerf=torch,r2l=compile"], build_parser()) == 0
    assert run([*base, "--out", str(tmp_path / "b")], build_parser()) == 0
    assert [(type(b), b.accel, b.active_path()) for b in made] == [(KiloNerfBackend, "torch", "torch-fp32"),
                                                                   (KiloNerfBackend, "auto", "torch-fp32")]
    assert (tmp_path / "a" / "0000.png").is_file() and (tmp_path / "b" / "0000.png").is_file()


@needs_demo
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["kilonerf", "r2l"])
def test_torch_path_asked_for_renders_in_torch_on_cuda(name):
    scene = Scene.load(DEMO)
    b = registry.load_backend(scene, name, "cuda", accel="torch")
    cam = scene.camera_list("test")[0].scaled(64, 64)
    b.render(RenderRequest.from_camera(cam, scene.near, scene.far, precision="fp16"))
    assert b.active_path() == "torch-fp16", b.accel_note
