"""Config dataclasses to and from the dicts stored in scene files, checkpoints and job records.

- ``config_to_dict``: a config as a JSON-ready dict (nested configs as dicts, tuples as lists).
- ``config_from_dict``: the inverse, refusing what it cannot honour (unknown keys, a value that is
  not a dict) with one ValueError that names it; nested configs are rebuilt from their dicts.
- ``config_replace``: a config with some settings changed, by name.

"Flat" sub-configs: a config may name fields holding a nested config whose settings are also
addressed by their bare names at the top level (the training jobs' ``schedule``: ``seed`` means
``schedule.seed``). ``config_from_dict`` moves such top-level keys into the nested config (files
written before the settings moved there are flat), ``config_replace`` accepts both spellings and
``config_settings`` lists both, for ``--set KEY=VALUE``.
"""

from __future__ import annotations

import dataclasses
import types
import typing


def config_to_dict(config) -> dict:
    """A config dataclass as a JSON-ready dict: nested configs through their own ``to_dict`` when
    they define one (else field by field), tuples as lists."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_types(cls) -> dict:
    """Field name -> resolved type of a dataclass (empty where the annotations do not resolve)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a name only imported for type checking: no nested rebuilding
        return {}


def _config_class(hint):
    """The dataclass a field holds (``X`` or ``X | None``), or None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _flat_fields(cls, flat) -> dict[str, type]:
    """{field name: nested config class} of the flat sub-configs ``flat`` of ``cls``."""
    hints = _field_types(cls)
    out = {}
    for name in flat:
        sub = _config_class(hints.get(name))
        if sub is None:
            raise TypeError(f"{cls.__name__}.{name} is not a nested config dataclass")
        out[name] = sub
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_settings(cls, flat=()) -> dict[str, dataclasses.Field]:
    """Every setting of ``cls`` by the names it may be given: its own fields, and the fields of its
    flat sub-configs both bare (``seed``) and dotted (``schedule.seed``). Each maps to its field,
    whose ``name`` is the bare name (what ``config_replace`` takes)."""
    out = {f.name: f for f in dataclasses.fields(cls)}
    for name, sub in _flat_fields(cls, flat).items():
        for f in dataclasses.fields(sub):
            out.setdefault(f.name, f)
            out[f"{name}.{f.name}"] = f
    return out


def config_from_dict(cls, d, what: str, *, flat=(), **convert):
    """``cls(**d)`` for a dataclass ``cls``, refusing what it cannot honour: a value that is not a
    dict, or keys ``cls`` does not have (a file written by a newer version, or edited by hand),
    with one ValueError that names them. ``convert`` maps field names to functions applied to
    their values first (e.g. lists back to tuples); other fields holding a config dataclass
    (``X`` or ``X | None``) are rebuilt from their dicts (through ``X.from_dict`` when it exists).

    ``flat``: fields holding a sub-config whose settings may also be given at the top level, as
    files written before they moved there store them; they are moved into it (a setting given
    both ways is an error). A flat sub-config's missing settings keep the values of ``cls``'s
    default for that field, so an old flat dict reads back as the config it was written from."""
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(d).__name__}")  # noqa: TRY004 - bad data
    fields = {f.name: f for f in dataclasses.fields(cls)}
    d = dict(d)
    for name, sub in _flat_fields(cls, flat).items():
        nested = d.get(name, {})
        if not isinstance(nested, dict):
            raise ValueError(f"{what}: {name} must be a JSON object, got {type(nested).__name__}")  # noqa: TRY004
        moved = {k: d.pop(k) for k in [f.name for f in dataclasses.fields(sub)] if k in d and k not in fields}
        twice = sorted(set(moved) & set(nested))
        if twice:
            raise ValueError(f"{what}: {', '.join(twice)} given both at the top level and in {name}")
        default = _default(fields[name])
        d[name] = {**(config_to_dict(default) if default is not None else {}), **nested, **moved}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {', '.join(unknown)} (written by a newer version?)")
    hints = _field_types(cls)
    values = {}
    for k, v in d.items():
        sub = _config_class(hints.get(k))
        if k in convert:
            v = convert[k](v)
        elif sub is not None and isinstance(v, dict):
            v = sub.from_dict(v) if hasattr(sub, "from_dict") else config_from_dict(sub, v, f"{what}: {k}")
        elif typing.get_origin(hints.get(k)) is tuple and isinstance(v, list):
            v = tuple(v)
        values[k] = v
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"{what}: {e}") from None


def config_replace(config, changes: dict, what: str, *, flat=()):
    """``config`` with ``changes`` ({setting: value}) applied: its own fields, and the settings of
    its flat sub-configs by their bare or dotted names (see ``config_settings``). Unknown names
    are one ValueError naming them."""
    fields = {f.name for f in dataclasses.fields(config)}
    subs = {name: {f.name for f in dataclasses.fields(sub)} for name, sub in _flat_fields(type(config), flat).items()}
    direct: dict = {}
    nested: dict[str, dict] = {name: {} for name in subs}
    unknown = []
    for key, value in changes.items():
        head, dot, leaf = key.partition(".")
        owner = next((name for name, names in subs.items() if key in names), None)
        if key in fields:
            direct[key] = value
        elif dot and head in subs and leaf in subs[head]:
            nested[head][leaf] = value
        elif owner is not None:
            nested[owner][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {', '.join(sorted(unknown))}")
    for name, kw in nested.items():
        if kw:
            direct[name] = dataclasses.replace(direct.get(name, getattr(config, name)), **kw)
    try:
        return dataclasses.replace(config, **direct)
    except TypeError as e:
        raise ValueError(f"{what}: {e}") from None
