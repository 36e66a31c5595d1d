"""Frozen config dataclasses from the dicts stored in scene files and checkpoints."""

from __future__ import annotations

import dataclasses


def config_from_dict(cls, d, what: str, **convert):
    """``cls(**d)`` for a dataclass ``cls``, refusing what it cannot honour: a value that is not a
    dict, or keys ``cls`` does not have (a file written by a newer version, or edited by hand),
    with one ValueError that names them. ``convert`` maps field names to functions applied to
    their values first (e.g. lists back to tuples)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {', '.join(unknown)} (written by a newer version?)")
    values = {k: (convert[k](v) if k in convert else v) for k, v in d.items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"{what}: {e}") from None
