"""Positional encoding (NeRF, Mildenhall et al. 2020, eq. 4), with the raw input kept."""

from __future__ import annotations

import torch


def encoded_size(in_dims: int, n_freqs: int, include_input: bool = True) -> int:
    """Width of ``positional_encoding`` output: in_dims * (include_input + 2 * n_freqs)."""
    return in_dims * (int(include_input) + 2 * n_freqs)


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """gamma(x) = (x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)).

    Ordering follows the NeRF reference code: for each frequency, sin then cos of all input
    dimensions. Frequencies are 2^0..2^(L-1) without the factor pi (as in the reference code).

    Args:
        x: (..., D)
    Returns:
        (..., D * (include_input + 2 * n_freqs))
    """
    if n_freqs == 0:
        return x
    freqs = 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)  # (L,)
    xb = x[..., None, :] * freqs[:, None]  # (..., L, D)
    enc = torch.stack([torch.sin(xb), torch.cos(xb)], dim=-2)  # (..., L, 2, D)
    enc = enc.flatten(-3)
    return torch.cat([x, enc], dim=-1) if include_input else enc
