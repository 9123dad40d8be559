"""Typed, validated configs built from plain dicts (Sacred's config): the bottom layer every part uses
(envs, algos, experiments, analysis, slurm), and that uses none of them.

A user's mistake in a config must end in one clear line naming the bad value and the valid choices,
before any work starts. ``build(cls, mapping)`` turns a dict into a frozen dataclass, rejecting unknown
keys, coercing ints/floats, checking Literal choices and calling the class's ``check()``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-facing configuration mistake; its message is one line that says what is valid."""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("null", "none"))):
            return None  # `with key=null` arrives as the string 'null' (the messages say "or null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: None is not allowed")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}={value!r} must be a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):  # `with key=true` arrives as a string
            return value.lower() == "true"
        raise ConfigError(f"{where}={value!r} must be True or False")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}={value!r} must be a whole number")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} must be a string")
        return value
    return value


def build(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``: unknown keys, wrong types and bad values raise ConfigError."""
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _check_type(value, hints[name], prefix + name) for name, value in mapping.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists, as JSON/Sacred would store them)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
