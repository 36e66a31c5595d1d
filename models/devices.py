"""Device selection: cuda > mps > cpu, chosen once."""

from __future__ import annotations

import torch


def best_device() -> torch.device:
    """The fastest available device (cuda, then mps, then cpu)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """Turn a user-given device name ("cuda", "cpu", "mps", None/"auto") into a device.

    Raises ValueError with a readable message if the device is not available.
    """
    if name in (None, "", "auto"):
        return best_device()
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' requested but MPS is not available on this machine")
    return dev


def describe(device: torch.device) -> str:
    """Human readable device name for HUDs and reports."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def sync(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def gemm_peak_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float | None:
    """The dense bf16 GEMM rate of a CUDA device, measured now (random n x n x n products): the
    roofline that achieved TFLOP/s figures are set against. None on other devices."""
    if device.type != "cuda":
        return None
    import time

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    rate = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return rate
