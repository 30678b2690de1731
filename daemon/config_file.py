"""Reading one YAML config file, with errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from daemon.errors import ConfigError

# More values than any real config holds (the full default config has a few hundred).
MAX_VALUES = 100_000


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of one config file; ConfigError naming the file (and line) when
    it is missing, unreadable, not YAML, not a mapping or gives a key twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(root, path)             # first: it bounds the walk below
        _check_duplicate_keys(root, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML nests too deeply; a config is sections of keys "
                          "(see sottovoce config show)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _check_duplicate_keys(node: Any, path: Path, prefix: str = "") -> None:
    """A key given twice in one mapping is an error (YAML loaders keep the last one silently,
    so the first, often the one being edited, would be ignored without a word). Aliases are
    walked at every use: :func:`_check_size` has bounded that to ``MAX_VALUES`` nodes."""
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


def _check_size(root: Any, path: Path) -> None:
    """Refuse a document that refers to itself (``a: &a [*a]``) or whose aliases expand to
    more than ``MAX_VALUES`` values ("billion laughs"): checking or printing it would never
    end. Each node is sized once, so this costs the size of the file, not of its expansion."""
    sizes: dict[int, int] = {}
    holders: set[int] = set()

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in holders:
            raise ConfigError(f"{path}: line {node.start_mark.line + 1}: a YAML alias refers to "
                              "the value that holds it; a config cannot contain itself")
        holders.add(id(node))
        children: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1 + sum(size(child) for child in children)
        holders.discard(id(node))
        sizes[id(node)] = total
        if total > MAX_VALUES:
            raise ConfigError(f"{path}: line {node.start_mark.line + 1}: its aliases expand to more "
                              f"than {MAX_VALUES} values; a config is a few sections of keys")
        return total

    if root is not None:
        size(root)
