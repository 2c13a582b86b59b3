"""Reading rule-file YAML: 1.2 scalars (strings stay strings), the line of every key and item.

PyYAML's default (YAML 1.1) reads unquoted `on`, `off`, `yes`, `no`, `y`, `n` as booleans and
`0777` as octal, so a status value `No` or a key `on` would silently change meaning. This loader
keeps only true/false as booleans and reads the rest as the text it is; the rule-file models then
refuse a boolean or a number wherever text belongs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from propready.core.expressions import SourceLocation

YamlPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RuleProblem:
    location: SourceLocation
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class RuleFileError(ValueError):
    """The rule files cannot be used; `problems` lists every one found."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _StringKeepingLoader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans, no octal, no `on`/`no` surprises."""


_StringKeepingLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StringKeepingLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_OCTAL_OR_SEXAGESIMAL = re.compile(r"^[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+)$")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    text = loader.construct_scalar(node)
    if _OCTAL_OR_SEXAGESIMAL.match(text):
        return text  # YAML 1.1 would read 0777 as 511 and 1:30 as 90
    return int(text.replace("_", ""), 0)


_StringKeepingLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_yaml(text: str, file: str) -> tuple[Any, dict[YamlPath, int]]:
    """Parse YAML keeping the line of every key and item.

    Raises RuleFileError for duplicate keys (PyYAML would silently keep the last) and for
    anything that is not YAML, with the line PyYAML points at.
    """
    loader = _StringKeepingLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[YamlPath, int] = {}
        return _to_python(loader, node, (), lines, file), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            problem += f" ({context} at line {context_mark.line + 1})"
        raise RuleFileError(
            [RuleProblem(SourceLocation(file, line), f"not valid YAML: {problem}")]
        ) from None
    finally:
        loader.dispose()


def _to_python(
    loader: yaml.SafeLoader,
    node: yaml.Node | None,
    path: YamlPath,
    lines: dict[YamlPath, int],
    file: str,
) -> Any:
    if node is None:
        return None
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if isinstance(key, list | dict):
                raise RuleFileError(
                    [RuleProblem(SourceLocation(file, key_node.start_mark.line + 1), "bad key")]
                )
            if key in result:
                raise RuleFileError(
                    [
                        RuleProblem(
                            SourceLocation(file, key_node.start_mark.line + 1),
                            f"duplicate key {key!r}",
                        )
                    ]
                )
            result[key] = _to_python(loader, value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(loader, item, (*path, index), lines, file)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node)


def line_of(lines: dict[YamlPath, int], path: YamlPath) -> int:
    """The line of `path`, or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
