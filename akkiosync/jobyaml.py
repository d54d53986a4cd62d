"""Reading a job file's YAML with bounded cost, and expanding ``${VAR}`` in its strings.

A job file is read by the daemon at every change, so a hostile or broken one must fail fast:
a file over ``MAX_FILE_BYTES`` is refused before it is parsed, and YAML aliases are counted as
the tree they expand to (a "billion laughs" of a few hundred bytes stands for billions of
nodes) and refused past ``MAX_NODES`` before anything is built from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 10_000  # scalars, lists and mappings once aliases are expanded; a job has ~100
MAX_NESTING = 8  # ${A:-${B:-...}} defaults within defaults

_START = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>\}|:-)?")
_BRACES = re.compile(r"\$\$|\$\{|\}")


class JobYamlError(ValueError):
    """A job file that cannot be read or parsed; the message says why (and where)."""


def read_yaml(path: Path) -> Any:
    """The parsed YAML document of ``path``, or ``JobYamlError``; at most ``MAX_FILE_BYTES``
    are read, and the document's expanded size is checked before it is built."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise JobYamlError(f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise JobYamlError(
            f"larger than {MAX_FILE_BYTES:,} bytes: not a job file (a job file is a few lines)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobYamlError(f"not UTF-8 text (byte {exc.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise JobYamlError(_yaml_problem(exc)) from None
    finally:
        loader.dispose()


def _check_size(root: Node) -> None:
    """Refuse a node graph whose tree (aliases expanded) exceeds ``MAX_NODES``, or that holds
    itself. Each node's size is computed once, so this is linear in the graph, not the tree."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise JobYamlError(
                    f"line {node.start_mark.line + 1}: invalid YAML: its aliases expand to more "
                    f"than {MAX_NODES:,} values: not a job file"
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in active:
            raise JobYamlError(
                f"line {node.start_mark.line + 1}: invalid YAML: an alias refers to a value "
                "that contains it"
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and problem.startswith("but "):  # "but found another document" needs its start
        problem = f"{context}, {problem}"
    return f"{at}invalid YAML: {problem}"


def expand(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` (defaults may nest) in every string of a parsed
    YAML tree; ``$$`` is a literal ``$``. Problems are appended as ``key.path: problem``."""
    if isinstance(value, dict):
        return {
            k: expand(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        return _substitute(value, env, path or "(top)", problems, 0)
    except JobYamlError as exc:
        problems.append(f"{path or '(top)'}: {exc}")
        return ""


def _substitute(
    text: str, env: Mapping[str, str], where: str, problems: list[str], depth: int
) -> str:
    if depth > MAX_NESTING:
        raise JobYamlError(f"defaults nested more than {MAX_NESTING} deep")
    out: list[str] = []
    i = 0
    while (j := text.find("$", i)) >= 0:
        out.append(text[i:j])
        if text.startswith("$$", j):
            out.append("$")
            i = j + 2
            continue
        match = _START.match(text, j)
        if match is None or match["op"] is None:  # a lone "$", "${1}", "${A-x}": as written
            out.append("$")
            i = j + 1
            continue
        name = match["name"]
        if match["op"] == "}":
            default, i = None, match.end()
        else:
            end = _closing_brace(text, match.end())
            if end is None:
                raise JobYamlError(f"${{{name}:-... has no closing }}")
            default, i = text[match.end() : end], end + 1
        if name in env and (env[name] or default is None):
            out.append(env[name])
        elif default is not None:
            out.append(_substitute(default, env, where, problems, depth + 1))
        else:
            problems.append(f"{where}: environment variable {name} is not set")
    out.append(text[i:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the ``}`` closing a default that starts at ``start``, skipping nested
    ``${...}`` and ``$$``; None if there is none."""
    depth = 0
    for match in _BRACES.finditer(text, start):
        if match[0] == "${":
            depth += 1
        elif match[0] == "}":
            if depth == 0:
                return match.start()
            depth -= 1
    return None
