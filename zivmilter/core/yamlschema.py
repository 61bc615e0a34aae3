"""Reading a YAML file strictly into frozen dataclasses: an unknown key, a key given twice, a
value of the wrong type or one its field's check refuses is an error naming the key path. No
zivmilter setting is known here: config.py holds the schema, this module the walk over it.

A field's metadata may hold `check` (a function that returns the value or raises ValueError),
`path` (a file name resolved against the config file's folder) and `internal` (not a key).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from zivmilter.errors import ConfigError, MessageError


class FieldProblem(ValueError):
    """A problem a dataclass finds across its fields (__post_init__), naming the field."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(problem)
        self.name = name
        self.problem = problem


class Invalid(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _describe(value: object) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def _convert(tp: Any, value: Any, key: str, base_dir: str | None, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, base_dir, meta)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, base_dir)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise Invalid(key, f"{_describe(value)} is not one of {choices}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp.parse(value) if hasattr(tp, "parse") else tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            raise Invalid(key, f"{_describe(value)} is not one of {choices}") from None
    if origin is tuple:
        if value is None:
            return ()
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise Invalid(key, f"expected a list, got {_describe(value)}")
        each = {"path": True} if meta.get("path") else {}  # a list of paths: each one resolved
        return tuple(
            _convert(args[0], v, f"{key}[{i}]", base_dir, each) for i, v in enumerate(value)
        )
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(key, f"expected a mapping, got {_describe(value)}")
        return {
            _convert(args[0], k, f"{key}.{k}", base_dir, {}): _convert(
                args[1], v, f"{key}.{k}", base_dir, {}
            )
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(key, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(key, f"expected a whole number, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(key, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise Invalid(key, f"expected a string, got {_describe(value)}")
        text = str(value)
        if meta.get("path") and base_dir and text and not os.path.isabs(text):
            text = os.path.normpath(os.path.join(base_dir, text))
        return text
    raise TypeError(f"config schema: unsupported type {tp!r} at {key}")  # a bug, not bad input


def build(cls: type[Any], data: Any, prefix: str, base_dir: str | None) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Invalid(prefix or "(top level)", f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in data:
        if name not in fields:
            known = ", ".join(sorted(fields))
            where = f"{prefix}.{name}" if prefix else str(name)
            raise Invalid(where, f"unknown key (known here: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default and not dataclasses.is_dataclass(hints[name]):
                raise Invalid(key, "required, but missing")
            if no_default:
                kwargs[name] = build(hints[name], {}, key, base_dir)
            continue
        value = _convert(hints[name], data[name], key, base_dir, f.metadata)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            try:
                value = check(value)
            except (ValueError, MessageError) as exc:
                raise Invalid(key, str(exc)) from None
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except FieldProblem as exc:
        raise Invalid(f"{prefix}.{exc.name}" if prefix else exc.name, exc.problem) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error: PyYAML keeps
    the last one silently, and an admin's second `organization:` block would quietly replace the
    first. Each node's key path is noted on the way down, for the error."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._paths: dict[int, str] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        prefix = self._paths.get(id(node), "")
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; keys given beside it override on purpose
            key = self.construct_object(key_node, deep=True)
            path = f"{prefix}.{key}" if prefix else str(key)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise _DuplicateKey(path, line, first_line[key])
                first_line[key] = line
            except TypeError:
                continue  # an unhashable key: the constructor below reports it
            self._paths.setdefault(id(value_node), path)
        return super().construct_mapping(node, deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        prefix = self._paths.get(id(node), "")
        for i, child in enumerate(node.value):
            self._paths.setdefault(id(child), f"{prefix}[{i}]")
        return super().construct_sequence(node, deep)


def read_yaml(path: str) -> Any:
    """A YAML file's data (safe_load, but a duplicate key is an error); a ConfigError names the
    file and, for bad YAML, where."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_StrictLoader)  # a SafeLoader: safe_load plus one check
    except _DuplicateKey as exc:
        raise ConfigError(
            path, exc.key, f"duplicate key on line {exc.line} (first given on line {exc.first})"
        ) from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, None, f"not valid YAML{where}: {problem}") from None
    return data
