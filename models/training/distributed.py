"""Data-parallel training across processes (torch.distributed, launched by ``torchrun``).

``torchrun --nproc_per_node=N main.py distill SCENE --backend r2l`` starts N copies of the CLI;
``init_from_environment`` joins them into one process group (NCCL on CUDA, one GPU per process;
gloo on CPU). A job then wraps its network in DistributedDataParallel, draws its own rays on
every rank, and leaves checkpoints, events and the scene to rank 0. A plain ``python main.py``
stays a single process and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, events and the scene."""
        return self.rank == 0


def current() -> DistInfo:
    """This process's place in the initialised process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    CUDA ranks use NCCL and one GPU each (``LOCAL_RANK``); CPU ranks use gloo.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    return current()


def device_for_rank(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA runs, else ``device`` unchanged."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (one small all-reduce)."""
    info = current()
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
