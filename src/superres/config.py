"""YAML settings files: one reader and one validation for every file the package reads settings from.

Training recipes (``superres.train.config``) and the degradation settings of ``superres degrade
--real-config`` are read here, so a file means the same thing wherever it is given. A file may
name a ``base`` file (relative to itself) whose values it overrides, key by key. Validation is
strict (unknown keys are errors) and a problem is reported in one line with the file and the
key's dotted path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from superres.errors import SuperresError


class ConfigError(SuperresError):
    """A settings file that cannot be used: the message names the file and the key."""


class Strict(BaseModel):
    """Base of every settings class: an unknown key is an error, not a silently ignored typo."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def merge(base: dict, over: dict) -> dict:
    """``base`` with the values of ``over``; mappings are merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | os.PathLike, rebase: Callable[[dict, Path], dict] | None = None) -> dict:
    """The mapping in a YAML file, with its ``base`` file (relative to it, recursively) merged under it.

    ``rebase(data, folder)``, if given, is applied to each file's own mapping before merging, with the
    folder of that file: what makes the relative paths of a base file relative to the base file."""
    return _read(Path(path).resolve(), (), rebase)


def _read(path: Path, seen: tuple[Path, ...], rebase: Callable[[dict, Path], dict] | None = None) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'base' files include each other")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); a config is YAML text") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}:{_place(e, text)}: not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    base = data.pop("base", None)
    if rebase is not None:
        data = rebase(data, path.parent)
    if base is None:
        return data
    return merge(_read((path.parent / base).resolve(), (*seen, path), rebase), data)


def yaml_problem(e: yaml.YAMLError) -> str:
    """What PyYAML found wrong, in one line: its problem and what it was parsing (where that began), not
    its several lines of quoted source with carets."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        start = e.context_mark
        context = f" ({e.context} at line {start.line + 1}, column {start.column + 1})" if e.context and start else ""
        return f"{e.problem}{context}"
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, most control characters)
        code = e.character if isinstance(e.character, int) else ord(e.character[:1] or "\0")
        return f"the character #x{code:04x} is not allowed in YAML"
    return " ".join(str(e).split())


def _place(e: yaml.YAMLError, text: str) -> str:
    """``line:column`` (from 1) of a YAML error in ``text``."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f"{mark.line + 1}:{mark.column + 1}"
    before = text[:getattr(e, "position", 0)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def validate(model: type[M], data: Any, path: str | os.PathLike, prefix: tuple[str, ...] = ()) -> M:
    """``data`` as a ``model``; every problem in one line, ``path: key.path: message; ...``.

    ``prefix`` is where ``data`` stands in the file (e.g. ``("data", "real")``), for the key paths.
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{_location(prefix, err['loc'], data)}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path}: {problems}") from None


def _location(prefix: tuple[str, ...], loc: tuple, data: Any) -> str:
    """The dotted key path of ``loc`` without pydantic's own steps: validator names (``function-after[...]``)
    and the tags of discriminated unions (a step that is the ``type`` of the mapping it stands in)."""
    node, parts = data, list(prefix)
    for part in loc:
        if isinstance(part, str) and ("[" in part or (isinstance(node, dict) and part not in node
                                                      and node.get("type") == part)):
            continue
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts) or "(top)"
