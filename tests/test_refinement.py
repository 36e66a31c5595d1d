"""The progressive refinement generator (viewer.refinement), driven directly without Qt.

A fake renderer draws an image that is a function of each pixel's position on the image plane,
((x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy), so a row strip (``crop_rows``: cy shifted) and a whole
render agree exactly, and the final step must equal a direct full-resolution render bit for bit.
Its render time is a fixed cost per pixel, so strip heights are deterministic.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.backends.base import RenderAborted, RenderRequest
from viewer.refinement import SideStats, crop_rows, refine_frames, refinement_sizes, upsample_nearest

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = tuple(tuple(float(i == j) for j in range(4)) for i in range(4))


def _request(w: int, h: int) -> RenderRequest:
    return RenderRequest(IDENTITY, w, h, fx=0.8 * w, fy=0.8 * w, cx=w / 2, cy=h / 2, near=2.0, far=6.0)


class FakeRenderer:
    """``render(request, should_abort) -> (images, stats)`` for a few fake backends.

    kinds: per backend "rgb" ((H, W, 3) image) or "depth" ((H, W)); backend i reports 2 * (i + 1)
    samples and 100 * (i + 1) FLOPs per ray and ``ms_per_pixel`` of render time per pixel.
    check_abort: consult should_abort before rendering, raising RenderAborted (as backends do
    between chunks). fail_on / abort_on: the call number (1-based) that raises RuntimeError, or
    that sees the abort flag turn true (like a newer view arriving mid-strip).
    """

    def __init__(self, kinds=("rgb",), ms_per_pixel=0.01, check_abort=True, fail_on=None, abort_on=None):
        self.kinds = kinds
        self.ms_per_pixel = ms_per_pixel
        self.check_abort = check_abort
        self.fail_on = fail_on
        self.abort_on = abort_on
        self.aborted = False
        self.calls: list[RenderRequest] = []

    @staticmethod
    def image(request: RenderRequest, kind: str) -> np.ndarray:
        x = np.arange(request.width, dtype=np.float64)
        y = np.arange(request.height, dtype=np.float64)
        u = ((x + 0.5 - request.cx) / request.fx)[None, :]
        v = ((y + 0.5 - request.cy) / request.fy)[:, None]
        if kind == "depth":
            return (3.0 + u * u + 2.0 * v * v).astype(np.float32)
        rgb = np.stack(np.broadcast_arrays(0.5 + 0.4 * np.sin(5.0 * u), 0.5 + 0.4 * np.cos(3.0 * v),
                                           0.5 + 0.4 * np.sin(2.0 * u + 7.0 * v)), -1)
        return rgb.astype(np.float32)

    def direct(self, request: RenderRequest) -> list[np.ndarray]:
        return [self.image(request, k) for k in self.kinds]

    def __call__(self, request: RenderRequest, should_abort):
        self.calls.append(request)
        if self.abort_on == len(self.calls):
            self.aborted = True
        if self.check_abort and should_abort():
            raise RenderAborted()
        if self.fail_on == len(self.calls):
            raise RuntimeError("simulated render failure")
        pixels = request.width * request.height
        stats = [SideStats(self.ms_per_pixel * pixels, 2.0 * (i + 1), 100.0 * (i + 1)) for i in range(len(self.kinds))]
        return self.direct(request), stats


def _run(fake, full, start_size, strip_ms=1.0, should_abort=lambda: False, start=None):
    """All steps of a refinement of ``full`` from a direct render at ``start_size``."""
    if start is None:
        start = fake.direct(full.scaled(*start_size))
    start_pixels = start[0].shape[0] * start[0].shape[1]
    return list(refine_frames(fake, full, start, fake.ms_per_pixel * start_pixels, strip_ms, should_abort))


# ------------------------------------------------------------------------------- schedule pieces
def test_levels_double_the_resolution_up_to_full_size():
    assert refinement_sizes(8, 64, 48) == [(16, 12), (32, 24), (64, 48)]
    assert refinement_sizes(5, 64, 48) == [(10, 8), (20, 15), (40, 30), (64, 48)]  # last level clamped
    # odd sizes: 3/33 doubles to 6/33, 12/33, 24/33, 1; heights 17 * that rounded
    assert refinement_sizes(3, 33, 17) == [(6, 3), (12, 6), (24, 12), (33, 17)]
    assert refinement_sizes(1, 5, 3) == [(2, 1), (4, 2), (5, 3)]  # 0.2 -> 0.4: height 1.2 rounds to 1


def test_a_full_width_start_gets_one_full_resolution_level():
    assert refinement_sizes(64, 64, 48) == [(64, 48)]  # interrupted in its last level: redo that level
    assert refinement_sizes(80, 64, 48) == [(64, 48)]
    assert refinement_sizes(1, 1, 1) == [(1, 1)]


def test_nearest_upsampling_repeats_and_picks_pixels():
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    np.testing.assert_array_equal(upsample_nearest(a, 4, 4), [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    b = np.arange(9, dtype=np.float32).reshape(3, 3)
    np.testing.assert_array_equal(upsample_nearest(b, 2, 2), [[0, 1], [3, 4]])  # rows/cols 0*3//2, 1*3//2
    rgb = np.random.default_rng(0).random((3, 5, 3)).astype(np.float32)
    up = upsample_nearest(rgb, 7, 4)
    assert up.shape == (4, 7, 3) and up.dtype == np.float32
    assert upsample_nearest(rgb, 5, 3) is not rgb and np.array_equal(upsample_nearest(rgb, 5, 3), rgb)


def test_crop_rows_renders_the_same_rows():
    fake = FakeRenderer()
    req = _request(24, 18)
    np.testing.assert_array_equal(fake.image(crop_rows(req, 5, 11), "rgb"), fake.image(req, "rgb")[5:11])


# -------------------------------------------------------------------------------- the generator
def test_steps_go_coarse_to_fine_in_strips_sized_by_the_cost_per_pixel():
    fake = FakeRenderer(ms_per_pixel=0.01)
    full = _request(64, 48)
    steps = _run(fake, full, (8, 6), strip_ms=1.0)
    # 0.01 ms per pixel, 1 ms strips: int(1 / (0.01 * w)) rows: 6 at w=16, 3 at w=32, 1 at w=64
    heights = {16: 6, 32: 3, 64: 1}
    sizes = [(16, 12), (32, 24), (64, 48)]
    assert len(steps) == 12 // 6 + 24 // 3 + 48 // 1 == len(fake.calls)
    expected = [(level, w, h, y) for level, (w, h) in enumerate(sizes) for y in range(heights[w], h + 1, heights[w])]
    assert [(s.level, s.width, s.height, s.rows_done) for s in steps] == expected
    assert all(s.levels == 3 for s in steps)
    # each render call is the next strip of its level's request
    for s, call, prev in zip(steps, fake.calls, [0] + [s.rows_done if s.rows_done < s.height else 0 for s in steps]):
        level_request = full.scaled(s.width, s.height)
        assert call == crop_rows(level_request, prev, s.rows_done)
    assert [s.final for s in steps] == [False] * (len(steps) - 1) + [True]
    assert [s.level_done for s in steps].count(True) == 3
    progress = [s.progress for s in steps]
    assert all(a < b for a, b in itertools.pairwise(progress)) and progress[-1] == 1.0
    total = sum(w * h for w, h in sizes)
    assert progress[0] == 16 * 6 / total


def test_the_final_step_equals_a_direct_full_resolution_render():
    fake = FakeRenderer(kinds=("rgb", "depth"))
    full = _request(64, 48)
    steps = _run(fake, full, (8, 6), strip_ms=2.0)
    final = steps[-1]
    assert final.final and (final.width, final.height) == (64, 48)
    direct = fake.direct(full)
    assert len(final.images) == 2 and final.images[0].shape == (48, 64, 3) and final.images[1].shape == (48, 64)
    for got, want in zip(final.images, direct):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_every_step_shows_its_rows_over_the_upsampled_previous_level():
    fake = FakeRenderer(kinds=("rgb", "depth"))
    full = _request(40, 30)
    start = fake.direct(full.scaled(5, 4))
    steps = _run(fake, full, None, strip_ms=0.5, start=start)
    previous = start
    for s in steps:  # snapshots: checked after the whole run, so later strips must not have changed them
        level = fake.direct(full.scaled(s.width, s.height))
        for got, rendered, before in zip(s.images, level, previous):
            np.testing.assert_array_equal(got[:s.rows_done], rendered[:s.rows_done])
            np.testing.assert_array_equal(got[s.rows_done:], upsample_nearest(before, s.width, s.height)[s.rows_done:])
        if s.level_done:
            previous = s.images


def test_times_and_costs_accumulate_over_strips_and_levels():
    fake = FakeRenderer(kinds=("rgb", "depth"), ms_per_pixel=0.01)
    steps = _run(fake, _request(32, 24), (8, 6), strip_ms=1.0)
    strip_ms = [0.01 * c.width * c.height for c in fake.calls]
    for i, s in enumerate(steps):
        assert s.render_ms == pytest.approx(2 * sum(strip_ms[:i + 1]))  # two backends per strip
        level_calls = [c for c, t in zip(fake.calls[:i + 1], steps) if t.level == s.level]
        level_ms = sum(0.01 * c.width * c.height for c in level_calls)
        assert [st.render_ms for st in s.side_stats] == pytest.approx([level_ms, level_ms])
        assert s.side_stats[0].samples_per_ray == 2.0 and s.side_stats[1].samples_per_ray == 4.0
        assert s.side_stats[0].flops_per_ray == 100.0 and s.side_stats[1].flops_per_ray == 200.0
        assert s.samples_per_ray == 4.0  # the larger of the two


@pytest.mark.parametrize("n", [1, 2, 5])
def test_aborting_after_n_steps_stops_without_another_render(n):
    fake = FakeRenderer()
    seen = []
    gen = refine_frames(fake, _request(64, 48), fake.direct(_request(64, 48).scaled(8, 6)), 0.48, 1.0,
                        lambda: len(seen) >= n)
    for step in gen:
        seen.append(step)
        assert not step.final
    assert len(seen) == n == len(fake.calls)
    assert not seen[-1].final
    with pytest.raises(StopIteration):  # ended for good
        next(gen)
    assert len(fake.calls) == n


def test_an_abort_inside_a_strip_render_ends_the_generator_cleanly():
    fake = FakeRenderer(abort_on=4)
    steps = _run(fake, _request(64, 48), (8, 6), strip_ms=1.0, should_abort=lambda: fake.aborted)
    assert len(steps) == 3 and len(fake.calls) == 4  # the aborted strip yields nothing
    assert not any(s.final for s in steps)


def test_an_abort_before_the_first_strip_yields_nothing():
    fake = FakeRenderer()
    assert _run(fake, _request(16, 12), (4, 3), should_abort=lambda: True) == []
    assert len(fake.calls) == 1


def test_interrupted_in_its_last_level_a_refinement_resumes_to_the_full_render():
    """The frame on screen is full-width but partly upsampled: refining it again redoes the
    full-resolution level over it and ends with the direct render."""
    fake = FakeRenderer(kinds=("rgb", "depth"))
    full = _request(32, 24)
    seen = []

    def in_last_level():  # a newer view arrives once 5 rows of the full-resolution level are done
        return bool(seen) and seen[-1].level == seen[-1].levels - 1 and seen[-1].rows_done >= 5

    for step in refine_frames(fake, full, fake.direct(full.scaled(4, 3)), 0.12, 1.0, in_last_level):
        seen.append(step)
        assert not step.final
    interrupted = seen[-1]
    assert interrupted.width == 32 and 5 <= interrupted.rows_done < 24
    fake.calls.clear()
    resumed = _run(fake, full, None, strip_ms=1.0, start=interrupted.images)
    assert all((s.width, s.height, s.level, s.levels) == (32, 24, 0, 1) for s in resumed)
    assert resumed[0].rows_done < interrupted.rows_done  # the level starts again from the top
    for got, before in zip(resumed[0].images, interrupted.images):  # over the interrupted frame
        np.testing.assert_array_equal(got[resumed[0].rows_done:], before[resumed[0].rows_done:])
    assert resumed[-1].final and resumed[-1].progress == 1.0
    assert sum(c.height for c in fake.calls) == 24
    for got, want in zip(resumed[-1].images, fake.direct(full)):
        np.testing.assert_array_equal(got, want)


def test_a_1x1_view_is_one_final_step_that_no_abort_preempts():
    fake = FakeRenderer(check_abort=False)
    steps = _run(fake, _request(1, 1), (1, 1), should_abort=lambda: True)
    assert len(steps) == 1 and steps[0].final and steps[0].progress == 1.0
    assert (steps[0].width, steps[0].height, steps[0].rows_done) == (1, 1, 1)
    np.testing.assert_array_equal(steps[0].images[0], fake.direct(_request(1, 1))[0])


def test_odd_sizes_refine_to_the_exact_full_render():
    fake = FakeRenderer(kinds=("rgb", "depth"))
    full = _request(33, 17)
    steps = _run(fake, full, (3, 2), strip_ms=0.3)
    assert [(s.width, s.height) for s in steps if s.level_done] == [(6, 3), (12, 6), (24, 12), (33, 17)]
    assert all(s.images[0].shape == (s.height, s.width, 3) and s.images[1].shape == (s.height, s.width)
               for s in steps)
    for got, want in zip(steps[-1].images, fake.direct(full)):
        np.testing.assert_array_equal(got, want)


def test_huge_strips_render_a_level_at_once():
    fake = FakeRenderer()
    steps = _run(fake, _request(20, 10), (5, 3), strip_ms=1e9)
    assert [(s.width, s.rows_done) for s in steps] == [(10, 5), (20, 10)]


def test_render_errors_propagate_after_the_steps_before_them():
    fake = FakeRenderer(fail_on=3)
    gen = refine_frames(fake, _request(64, 48), fake.direct(_request(8, 6)), 0.48, 1.0)
    assert [next(gen).rows_done, next(gen).rows_done] == [6, 12]
    with pytest.raises(RuntimeError, match="simulated render failure"):
        next(gen)


def test_the_module_loads_no_qt():
    code = "import sys, viewer.refinement\nprint(','.join(m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'OpenGL')))"
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
