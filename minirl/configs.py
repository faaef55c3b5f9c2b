"""Configs as a user names them: fields by name, values from text, JSON, presets.

An algorithm's ``Config`` is an equinox module; this module is the one place that looks
its fields up by name (``--set``, ``--grid``, a config file, a checkpoint), parses a value
from text by the field's type, turns a config into JSON and back, and builds the config a
run starts from (defaults, then the algorithm's preset for the env, then the user's
changes). Names starting with ``env.`` are env parameters, not config fields.
"""

import dataclasses
import math
import types
from typing import Any, get_args, get_origin

import equinox as eqx
import jax
import numpy as np

from .core.config import ConfigError

ENV_PREFIX = "env."  # names that refer to env parameters: env.gravity, ...
ALIASES = {"lr": "learning_rate"}  # short names accepted for config fields


def fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """``{name: field}`` of a config class."""
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _algo_name(config_cls: type) -> str:
    return config_cls.__module__.rsplit(".", 1)[-1]


def field(config_cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` (or its alias, e.g. ``lr``) of ``config_cls``; a
    :class:`ConfigError` listing the fields if there is none."""
    known = fields(config_cls)
    resolved = name if name in known else ALIASES.get(name, name)
    if resolved not in known:
        raise ConfigError(
            f"unknown field {name!r} for {_algo_name(config_cls)}; fields: "
            f"{', '.join(known)} (env parameters are named {ENV_PREFIX}FIELD)"
        )
    return known[resolved]


def is_static(f: dataclasses.Field) -> bool:
    """Whether a field sets shapes, loop lengths or a switch (``eqx.field(static=True)``)."""
    return bool(f.metadata.get("static", False))


def sweepable_field(config_cls: type, name: str) -> str:
    """The config field a grid name refers to (aliases resolved). :class:`ConfigError` for
    an unknown field, and for a static field: that would need one program per value."""
    f = field(config_cls, name)
    if is_static(f):
        raise ConfigError(
            f"field {f.name!r} of {_algo_name(config_cls)} is static (it sets shapes, loop "
            "lengths or a switch) and cannot be swept in one program; sweep numeric fields, "
            "or set it with --set"
        )
    return f.name


def split_assignment(assignment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"lr": 1e-3, "env.gravity": 3.7}`` → ``({"lr": 1e-3}, {"gravity": 3.7})``."""
    config, env = {}, {}
    for name, value in assignment.items():
        if name.startswith(ENV_PREFIX):
            env[name[len(ENV_PREFIX):]] = value
        else:
            config[name] = value
    return config, env


def type_name(annotation: Any) -> str:
    if get_origin(annotation) is tuple:
        return "comma-separated list of " + get_args(annotation)[0].__name__
    return getattr(annotation, "__name__", str(annotation))


def parse_text(name: str, annotation: Any, text: str) -> Any:
    """``text`` as a value of type ``annotation`` (bool, int, float, tuple[int, ...], str);
    :class:`ConfigError` naming ``name`` if it is not one."""
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(item(p) for p in parts)
        return text
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a valid {type_name(annotation)}") from None


def parse_value(config_cls: type, name: str, text: str) -> Any:
    """``text`` parsed as the type of field ``name`` of ``config_cls``."""
    f = field(config_cls, name)
    return parse_text(f.name, f.type, text)


def coerce(config_cls: type, name: str, value: Any) -> Any:
    """A value from a file (JSON or YAML: numbers, strings, lists, booleans) as the type of
    field ``name``; text goes through :func:`parse_value`."""
    f = field(config_cls, name)
    if isinstance(value, str):
        if value in ("inf", "-inf") and f.type is float:
            return float(value)
        return parse_text(f.name, f.type, value)
    if isinstance(value, list):
        return tuple(value)
    if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_json(config: eqx.Module) -> dict[str, Any]:
    """Every field's value as JSON (tuples as lists, infinities as "inf"/"-inf")."""
    out = {}
    for name in fields(type(config)):
        value = getattr(config, name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.ndarray | jax.Array):
            value = np.asarray(value).tolist()
        if isinstance(value, float) and math.isinf(value):
            value = "inf" if value > 0 else "-inf"
        out[name] = value
    return out


def from_json(config_cls: type, data: dict[str, Any]) -> eqx.Module:
    """The config :func:`to_json` wrote; an unknown field is a :class:`ConfigError`."""
    known = fields(config_cls)
    kwargs = {}
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"unknown field {name!r} for {_algo_name(config_cls)}")
        if isinstance(value, list):
            value = tuple(value)
        elif value in ("inf", "-inf"):
            value = float(value)
        kwargs[name] = value
    return config_cls(**kwargs)


def split_text(flag: str, text: str, shape: str) -> tuple[str, str]:
    """``"name=value"`` → ``("name", "value")``; a :class:`ConfigError` naming ``flag``
    otherwise."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ConfigError(f"{flag} {text!r} must look like {shape}")
    return name, value


def number(name: str, text: str) -> float:
    """``text`` as a float; a :class:`ConfigError` naming ``name`` otherwise."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def parse_sets(config_cls: type, texts: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """``["lr=1e-3", "env.gravity=3.7"]`` (``--set``) → (config changes typed by their
    fields, env parameter changes as numbers)."""
    changes, env_changes = {}, {}
    for text in texts:
        name, value = split_text("--set", text, "field=value")
        if name.startswith(ENV_PREFIX):
            env_changes[name[len(ENV_PREFIX):]] = number(name, value)
        else:
            changes[field(config_cls, name).name] = parse_value(config_cls, name, value)
    return changes, env_changes


def parse_grid(config_cls: type, texts: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,3e-4", "env.gravity=9.8,3.7"]`` (``--grid``) → ``{"learning_rate":
    [...], "env.gravity": [...]}``; unknown or static fields are a :class:`ConfigError`."""
    values: dict[str, list[Any]] = {}
    for text in texts:
        name, value = split_text("--grid", text, "field=value1,value2,...")
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if name.startswith(ENV_PREFIX):
            key, parsed = name, [number(name, part) for part in parts]
        else:
            key = sweepable_field(config_cls, name)
            parsed = [parse_value(config_cls, key, part) for part in parts]
        if key in values:
            raise ConfigError(f"--grid {key} is given twice")
        values[key] = parsed
    return values


def make(
    algo: types.ModuleType,
    env_id: str | None = None,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> eqx.Module:
    """The algorithm's defaults, then its documented preset for ``env_id`` (if any), then
    ``overrides`` (names or aliases), then ``steps`` as ``total_steps``."""
    kwargs = dict(algo.preset(env_id)) if env_id is not None else {}
    for name, value in (overrides or {}).items():
        kwargs[field(algo.Config, name).name] = value
    if steps is not None:
        kwargs["total_steps"] = steps
    return algo.Config(**kwargs)
