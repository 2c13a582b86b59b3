"""Reading rule-file YAML: 1.2 scalars (strings stay strings), the line of every key and item.

PyYAML's default (YAML 1.1) reads unquoted `on`, `off`, `yes`, `no`, `y`, `n` as booleans and
`0777` as octal, so a status value `No` or a key `on` would silently change meaning. This loader
keeps only true/false as booleans and reads the rest as the text it is; the rule-file models then
refuse a boolean or a number wherever text belongs.

Hostile files are refused before they can cost memory or time: YAML aliases (`*name`) are
refused where they appear (expanding them is how a one-kilobyte "billion laughs" file becomes
gigabytes; rule files never need them: repeat the text, or share a condition as a trigger),
collections nest at most `MAX_YAML_DEPTH` deep, and a RecursionError or MemoryError inside the
YAML library still becomes `file:line: reason`. Sizes and file types are checked where files are
read (rulefiles.read_rule_source).
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


MAX_YAML_DEPTH = 20  # the shipped files nest 7 deep (tests: -> case -> property -> value)


class _StringKeepingLoader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans, no octal, no `on`/`no` surprises.

    Composing also refuses aliases and nesting deeper than MAX_YAML_DEPTH (as YAML errors with
    the line they are on), before any node is built into Python objects.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed in rule files; repeat the "
                "value instead",
                event.start_mark,
            )
        if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            if self._depth >= MAX_YAML_DEPTH:
                start = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", start.start_mark
                )
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


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
    except (RecursionError, MemoryError) as exc:
        # The limits above should make these impossible; if the library still runs out, say
        # where it was rather than crash the loader (or the daemon reloading the rules).
        line = getattr(loader, "line", 0) + 1
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        raise RuleFileError(
            [RuleProblem(SourceLocation(file, line), f"not a usable rule file: {reason}")]
        ) from None
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
