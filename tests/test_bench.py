"""``bench``: the report files are written and parse (Markdown, CSV, strict JSON, PNG), the quality
columns equal ``evaluate`` (what ``eval`` prints), progress and cancellation work."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from models.backends.nerf import NerfBackend
from models.bench import BenchCancelled, markdown_table, run_bench, time_backend
from models.cli import build_parser, run
from models.evaluation import evaluate, split_cameras
from models.scene import Scene
from models.training.jobs import dataset_for_scene
from test_viewer_compare import make_compare_scene
from viewer_fixtures import FlatBackend


@pytest.fixture(scope="module")
def bench_scene(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bench")
    return make_compare_scene(base / "scene", base / "data")


def _strict_json(text: str):
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def _nerf(scene: Scene) -> NerfBackend:
    b = NerfBackend("cpu")
    b.load(scene)
    return b


def test_bench_command_writes_reports_that_parse(bench_scene, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["bench", str(bench_scene), "--backends", "nerf", "--size", "32", "--out", str(out), "--views", "2",
            "--timing-views", "2", "--repeats", "2", "--device", "cpu", "--quiet"]
    assert run(argv, build_parser()) == 0
    printed = capsys.readouterr().out
    assert "| NeRF |" in printed and "bench.md" in printed

    report = _strict_json((out / "bench.json").read_text())
    (row,) = report["rows"]
    assert report["device"] == "cpu" and row["backend"] == "nerf" and row["label"] == "NeRF"
    assert (row["width"], row["height"]) == (32, 32) and row["frames_timed"] == 4
    assert row["quality_views"] == 2 and row["quality_size"] == "48x48"
    assert row["peak_memory_mib"] is None  # no GPU: null, not NaN
    assert row["ms_p95"] >= row["ms_median"] > 0 and row["fps"] == pytest.approx(1000 / row["ms_median"])
    assert row["speedup_vs_nerf"] == pytest.approx(1.0)
    assert row["params"] == _nerf(Scene.load(bench_scene)).parameter_count()
    assert (row["accel"], row["path"]) == ("auto", "torch-fp32")  # no --accel: the default path, on the CPU

    # quality columns are eval's numbers for the same views
    scene = Scene.load(bench_scene)
    data = dataset_for_scene(scene)
    q = evaluate(_nerf(scene), data.splits["test"], data.near, data.far, data.background, max_views=2)
    assert row["psnr"] == pytest.approx(q["psnr"], abs=1e-9) and row["ssim"] == pytest.approx(q["ssim"], abs=1e-9)

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["backend"] == "nerf"
    assert float(rows[0]["psnr"]) == pytest.approx(row["psnr"]) and int(rows[0]["params"]) == row["params"]
    assert math.isnan(float(rows[0]["peak_memory_mib"]))

    md = (out / "bench.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:3] == ["backend", "PSNR", "SSIM"] and len(header) == 14
    assert set(table[1].replace("|", "")) <= set("-:")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert len(cells) == 14 and cells[0] == "NeRF" and cells[1] == f"{row['psnr']:.2f}"
    assert cells[9] == "–" and row["of_peak"] is None and report["gemm_peak_tflops"] is None  # no GPU peak
    assert cells[11] == "–" and cells[13] == "1.0x"
    # achieved TFLOP/s: the backend's own FLOP count over the timed frame
    assert row["tflops"] == pytest.approx(row["flops_per_ray"] * 32 * 32 / (row["ms_median"] / 1e3) / 1e12)
    assert cells[8] == f"{row['tflops']:.2f}"
    trained = Scene.load(bench_scene).backends["nerf"].get("metrics", {}).get("teacher", {}).get("train_seconds")
    assert row["train_seconds"] == trained and cells[12] == ("–" if trained is None else f"{trained:.0f}")
    assert "Device: cpu" in md[0]

    png = iio.imread(out / "bench.png")
    assert png.shape[0] >= 300 and png.shape[1] >= 400 and png[..., :3].std() > 5  # a drawn plot


def test_two_backends_progress_and_speedups(bench_scene, tmp_path):
    scene = Scene.load(bench_scene)
    data = dataset_for_scene(scene)
    flat = FlatBackend("cpu")
    flat.load(scene)
    backends = {"nerf": _nerf(scene), "flat": flat}
    fractions, messages = [], []
    report = run_bench(scene, data, ["nerf", "flat"], torch.device("cpu"), 24, tmp_path / "two", views=2,
                       timing_views=1, repeats=2, load=backends.__getitem__, on_progress=messages.append,
                       on_fraction=fractions.append)
    nerf, fl = report["rows"]
    assert (nerf["backend"], fl["backend"]) == ("nerf", "flat")
    assert nerf["speedup_vs_nerf"] == pytest.approx(1.0)
    assert fl["speedup_vs_nerf"] == pytest.approx(nerf["ms_median"] / fl["ms_median"])
    assert nerf["samples_per_ray"] > fl["samples_per_ray"] == 1.0
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert len(fractions) == 2 * (2 + 2 + 2 * 1)  # per backend: quality views + warm-up + timed frames
    assert any("flat" in m and "timing" in m for m in messages)
    text = markdown_table(report)
    assert text.count("\n| ") == 3  # header + two backends
    parsed = _strict_json((tmp_path / "two" / "bench.json").read_text())
    assert [r["backend"] for r in parsed["rows"]] == ["nerf", "flat"]


def test_cancel_stops_between_renders_and_writes_nothing(bench_scene, tmp_path):
    scene = Scene.load(bench_scene)
    data = dataset_for_scene(scene)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    flat = FlatBackend("cpu")
    flat.load(scene)
    with pytest.raises(BenchCancelled):
        run_bench(scene, data, ["flat"], torch.device("cpu"), 16, tmp_path / "never", load=lambda n: flat,
                  should_cancel=cancel)
    assert not (tmp_path / "never").exists()


def test_time_backend_scales_to_the_size_and_counts_frames(bench_scene):
    scene = Scene.load(bench_scene)
    data = dataset_for_scene(scene)
    cams = split_cameras(data.splits["test"])[:2]
    flat = FlatBackend("cpu")
    flat.load(scene)
    ticks = []
    t = time_backend(flat, cams, data.near, data.far, data.background, 20, repeats=3, warmup=1,
                     on_frame=lambda: ticks.append(1))
    assert (t["width"], t["height"]) == (20, 20) and t["frames_timed"] == 6 and len(ticks) == 7
    assert t["ms_p95"] >= t["ms_median"] > 0 and np.isnan(t["peak_memory_mib"])
