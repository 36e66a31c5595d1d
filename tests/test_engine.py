"""Training engine: events, checkpoints, resume, NaN guard, pause/cancel, on a toy job."""

import threading
import time

import pytest
import torch

from models.training.engine import (
    JobCancelled,
    JobControl,
    TrainingError,
    TrainingJob,
    Validation,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    read_checkpoint,
    run_job,
    strip_prefix,
)


class LineJob(TrainingJob):
    """Fits y = 3x - 1 with one linear layer; deterministic."""

    stage = "toy"

    def __init__(self, steps=200, nan_at=None, sleep=0.0):
        torch.manual_seed(0)
        self.total_steps, self.validate_every, self.checkpoint_every_s = steps, 50, 0.0
        self.net = torch.nn.Linear(1, 1)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)
        self.x = torch.linspace(-1, 1, 64)[:, None]
        self.nan_at, self.sleep, self.finished = nan_at, sleep, False

    def train_step(self, step):
        if self.sleep:
            time.sleep(self.sleep)
        loss = ((self.net(self.x) - (3 * self.x - 1)) ** 2).mean()
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def validate(self):
        with torch.no_grad():
            return Validation(psnr=float(-10 * torch.log10(((self.net(self.x) - (3 * self.x - 1)) ** 2).mean() + 1e-12)))

    def checkpoint_tensors(self):
        return {**module_tensors(self.net, "net"), **optimizer_tensors(self.opt)}

    def restore(self, t):
        self.net.load_state_dict(strip_prefix(t, "net"))
        load_optimizer_tensors(self.opt, t)

    def finish(self):
        self.finished = True
        return {"w": float(self.net.weight)}


def test_runs_to_completion_with_events(tmp_path):
    events = []
    job = LineJob()
    metrics = run_job(job, events.append, checkpoint=tmp_path / "c.safetensors", event_interval_s=0.0)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.count("validation") == 4
    assert abs(metrics["w"] - 3.0) < 0.05
    assert read_checkpoint(tmp_path / "c.safetensors")[0] == 200


def test_resume_equals_uninterrupted(tmp_path):
    ref = LineJob(steps=120)
    run_job(ref, lambda e: None)
    ck = tmp_path / "c.safetensors"
    first = LineJob(steps=120)
    control = JobControl()

    def stop_at_60(ev):
        if ev.kind == "step" and ev.step >= 60:
            control.cancel()

    with pytest.raises(JobCancelled):
        run_job(first, stop_at_60, control, checkpoint=ck, event_interval_s=0.0)
    step, _ = read_checkpoint(ck)
    assert 60 <= step < 120
    second = LineJob(steps=120)
    events = []
    run_job(second, events.append, checkpoint=ck)
    assert any("resumed" in e.message for e in events)
    # Adam state and weights were restored: the result equals the uninterrupted run
    torch.testing.assert_close(second.net.weight, ref.net.weight)


def test_cancel_writes_a_checkpoint_at_the_cancelled_step(tmp_path):
    ck = tmp_path / "c.safetensors"
    job = LineJob(steps=500)
    job.checkpoint_every_s = 3600.0  # no periodic checkpoint: only the one written on cancel
    control = JobControl()
    events = []

    def stop_at_37(ev):
        events.append(ev)
        if ev.kind == "step" and ev.step >= 37:
            control.cancel()

    with pytest.raises(JobCancelled):
        run_job(job, stop_at_37, control, checkpoint=ck, event_interval_s=0.0)
    step, tensors = read_checkpoint(ck)
    assert step == 37 and "written at step 37" in events[-1].message
    torch.testing.assert_close(tensors["net.weight"], job.net.weight.detach())


def test_nan_stops_and_keeps_last_checkpoint(tmp_path):
    ck = tmp_path / "c.safetensors"
    run_job(LineJob(steps=50), lambda e: None, checkpoint=ck)
    events = []
    job = LineJob(steps=100, nan_at=70)
    with pytest.raises(TrainingError, match="NaN"):
        run_job(job, events.append, checkpoint=ck, event_interval_s=0.0)
    assert events[-1].kind == "failed" and "NaN" in events[-1].message
    step, tensors = read_checkpoint(ck)
    assert step <= 70 and all(torch.isfinite(v).all() for v in tensors.values())
    assert not job.finished


def test_pause_and_cancel_from_another_thread():
    control = JobControl()
    job = LineJob(steps=10_000, sleep=0.001)
    events = []
    th = threading.Thread(target=lambda: pytest.raises(JobCancelled, run_job, job, events.append, control))
    th.start()
    time.sleep(0.1)
    control.pause()
    time.sleep(0.1)
    paused_at = max(e.step for e in events if e.kind in ("step", "paused", "started"))
    time.sleep(0.2)
    assert max(e.step for e in events) <= paused_at + 1  # no progress while paused
    control.resume()
    time.sleep(0.1)
    control.cancel()
    th.join(5)
    assert not th.is_alive()
    assert [e.kind for e in events][-1] == "cancelled"
    assert "paused" in [e.kind for e in events] and "resumed" in [e.kind for e in events]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    ck = tmp_path / "c.safetensors"
    ck.write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="checkpoint unreadable"):
        run_job(LineJob(steps=5), lambda e: None, checkpoint=ck)
