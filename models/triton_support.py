"""Optional Triton: lazy import for the fused kernels (R2L, KiloNeRF) and the CPU interpreter switch.

Triton is not a dependency of the package (CPU machines and CI run without it); GPU machines
have it. Kernels are defined on first use, inside a function, after ``bind_triton``.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def can_run_kernels() -> bool:
    """CUDA is there, or the interpreter is on."""
    import torch

    return torch.cuda.is_available() or interpreting()


def bind_triton(module_globals: dict):
    """Import Triton and bind ``tl`` and ``libdevice`` into a kernel module's globals.

    Triton resolves the names a kernel uses in its module's globals, not in the closure that
    defines it. ``libdevice``'s sin/cos are accurate for the large arguments of positional
    encodings (2^9 x); the CPU interpreter only emulates ``tl.math`` (numpy's sin/cos), so there
    ``libdevice`` is ``tl.math``. Returns the ``triton`` module.
    """
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    module_globals.update(tl=tl, libdevice=tl.math if interpreting() else libdevice)
    return triton


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
