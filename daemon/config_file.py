"""Reading one YAML config file, with errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from daemon.errors import ConfigError


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of one config file; ConfigError naming the file (and line) when
    it is missing, unreadable, not YAML, not a mapping or gives a key twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _check_duplicate_keys(node: Any, path: Path, prefix: str = "") -> None:
    """A key given twice in one mapping is an error (YAML loaders keep the last one silently,
    so the first, often the one being edited, would be ignored without a word)."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path, prefix)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        name = f"{prefix}.{key}" if prefix else str(key)
        line = key_node.start_mark.line + 1
        if key is not None and key != "<<":
            if key in seen:
                raise ConfigError(f"{path}: {name}: duplicate key on line {line} (already set on line "
                                  f"{seen[key]}); expected each key once")
            seen[key] = line
        _check_duplicate_keys(value_node, path, name)
