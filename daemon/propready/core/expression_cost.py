"""A static cost bound for CEL expressions: refuse at load what could spend more than 10 ms.

The `cel` binding (common-expression-language 0.10) has no evaluation budget, holds the GIL
while it evaluates, and no signal or thread can interrupt it: a 194-character expression of six
nested `.map` calls over ten-element lists takes seconds, and freezes the whole daemon, watchdog
pings included. So the cost is bounded before an expression is accepted, by rules on its text,
together with a size cap on the facts an expression may read (`MAX_FACT_TEXT`,
`MAX_FACT_ITEMS`, enforced where facts enter CEL, in expressions.EvaluationScope).

Without a comprehension macro (all, exists, exists_one, map, filter) the work is linear in the
expression's length times the size of the facts it reads: at most `MAX_EXPRESSION_CHARS`
characters, so at most a few hundred operations on text of at most 4,096 characters. Macros
multiply: each iterates its list and evaluates its body per element, and nested or chained
macros multiply again. Hence:

- at most `MAX_MACROS` macros per expression, none inside another macro's list or body;
- a macro iterates only a list literal (at most `MAX_LIST_LITERAL` elements) or one field
  (`property.tags`, at most `MAX_FACT_ITEMS` items), never the property map itself or a list
  computed in the expression (`(a + b + c).map(...)` would grow it);
- a macro's body neither builds values per element (`+`: strings and lists that grow with each
  step) nor compiles a regular expression per element (`matches`), and the bodies of an
  expression's macros are at most `MAX_MACRO_BODY_CHARS` characters together (each operation
  in a body runs once per element);
- list and map literals have at most `MAX_LIST_LITERAL` elements, brackets nest at most
  `MAX_BRACKET_DEPTH` deep;
- `matches()` takes a string literal (a pattern from the data could cost anything to compile),
  and the patterns' weight stays under `MAX_REGEX_WEIGHT`: compiling a regular expression costs
  in proportion to its expanded size, counted repetitions (`{n}`) multiply it, and Unicode
  classes (`\\w`, `\\b`, `\\p{..}`) are about ten times dearer than others (`\\w{100}` takes
  25 ms to compile). A pattern weighs (1 + 10 per Unicode class + 1 per `\\d`, `\\s`) times
  the product of its repetition counts; the weights of an expression add up.

tests/benchmarks/bench_cel_cost.py generates the most expensive expressions these rules accept
and times them against facts at the size caps; the limits are set so that they stay under
10 ms on the reference machine (see README, "Rule files").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_EXPRESSION_CHARS = 1000
MAX_MACROS = 2
MAX_LIST_LITERAL = 100
MAX_BRACKET_DEPTH = 12
MAX_FACT_TEXT = 4096
MAX_FACT_ITEMS = 50
MAX_MACRO_BODY_CHARS = 300
MAX_REGEX_WEIGHT = 120

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FACT_MAPS = frozenset({"property", "previous"})
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}

Token = tuple[str, str, int]  # (kind, text, offset), as expressions._tokens yields them
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_HEAVY_CLASS = re.compile(r"\\[wWbBpP]")
_LIGHT_CLASS = re.compile(r"\\[dDsS]")


def length_problem(source: str) -> str | None:
    """Checked before compiling: the compiler's own time grows with the text."""
    if len(source) > MAX_EXPRESSION_CHARS:
        return (
            f"expression too long to bound its cost: {len(source):,} characters "
            f"(at most {MAX_EXPRESSION_CHARS:,})"
        )
    return None


def cost_problem(tokens: Sequence[Token]) -> str | None:
    """Why the expression's cost cannot be bounded, or None when it can."""
    pairs, depth_problem = _match_brackets(tokens)
    if depth_problem is not None:
        return depth_problem
    problem = _literal_sizes(tokens, pairs)
    if problem is not None:
        return problem
    problem = _regex_problem(tokens)
    if problem is not None:
        return problem
    macros = _macro_spans(tokens, pairs)
    if not macros:
        return None
    depth = max(sum(1 for o in macros if o[0] <= m[0] and m[2] <= o[2]) for m in macros)
    if depth > 1:
        return (
            f"comprehension macros nested or chained {depth} deep (at most 1: each level "
            "multiplies the work by the size of its list)"
        )
    if len(macros) > MAX_MACROS:
        return f"{len(macros)} comprehension macros (at most {MAX_MACROS} per expression)"
    body_chars = sum(tokens[end][2] - tokens[dot + 2][2] - 1 for _start, dot, end in macros)
    if body_chars > MAX_MACRO_BODY_CHARS:
        return (
            f"comprehension macro bodies of {body_chars} characters (at most "
            f"{MAX_MACRO_BODY_CHARS} together: each runs once per element)"
        )
    for start, dot, end in macros:
        name = tokens[dot + 1][1]
        receiver = _receiver_problem(tokens, pairs, start, dot)
        if receiver is not None:
            return f".{name}(): {receiver}"
        body = _body_problem(tokens, dot + 2, end)
        if body is not None:
            return f".{name}(): {body}"
    return None


def _match_brackets(tokens: Sequence[Token]) -> tuple[dict[int, int], str | None]:
    """Opening index -> closing index (and the reverse); a problem when nested too deep."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, (kind, text, _offset) in enumerate(tokens):
        if kind != "punct":
            continue
        if text in _OPEN:
            stack.append(i)
            if len(stack) > MAX_BRACKET_DEPTH:
                return pairs, (
                    f"brackets nested more than {MAX_BRACKET_DEPTH} deep (at most "
                    f"{MAX_BRACKET_DEPTH})"
                )
        elif text in _CLOSE and stack and tokens[stack[-1]][1] == _CLOSE[text]:
            opening = stack.pop()
            pairs[opening] = i
            pairs[i] = opening
    return pairs, None  # unbalanced text is the compiler's to refuse


def _is_operand_end(token: Token) -> bool:
    kind, text, _offset = token
    if kind == "ident":
        return text != "in"  # `x in [...]`: the list after `in` is a literal, not an index
    return kind in ("number", "string") or text in (")", "]", "}")


def _is_literal(tokens: Sequence[Token], opening: int) -> bool:
    """`[` opening a list literal, not an index (`x[0]`); `{` is always a literal."""
    return tokens[opening][1] == "{" or opening == 0 or not _is_operand_end(tokens[opening - 1])


def _literal_sizes(tokens: Sequence[Token], pairs: dict[int, int]) -> str | None:
    for opening, closing in pairs.items():
        if opening > closing or tokens[opening][1] not in "[{" or not _is_literal(tokens, opening):
            continue
        elements = _top_level_items(tokens, pairs, opening, closing)
        if elements > MAX_LIST_LITERAL:
            kind = "list" if tokens[opening][1] == "[" else "map"
            return f"a {kind} literal of {elements} elements (at most {MAX_LIST_LITERAL})"
    return None


def _top_level_items(
    tokens: Sequence[Token], pairs: dict[int, int], opening: int, closing: int
) -> int:
    if closing == opening + 1:
        return 0
    count, i = 1, opening + 1
    while i < closing:
        text = tokens[i][1]
        if text in _OPEN and i in pairs:
            i = pairs[i]
        elif text == "," and tokens[i + 1][1] not in ("]", "}"):  # a trailing comma adds none
            count += 1
        i += 1
    return count


def _macro_spans(tokens: Sequence[Token], pairs: dict[int, int]) -> list[tuple[int, int, int]]:
    """(receiver start, index of the dot, index of the closing parenthesis) of each macro."""
    spans = []
    for i in range(len(tokens) - 2):
        if (
            tokens[i][1] == "."
            and tokens[i + 1][0] == "ident"
            and tokens[i + 1][1] in MACROS
            and tokens[i + 2][1] == "("
            and i + 2 in pairs
        ):
            spans.append((_receiver_start(tokens, pairs, i), i, pairs[i + 2]))
    return spans


def _receiver_start(tokens: Sequence[Token], pairs: dict[int, int], dot: int) -> int:
    """Where the postfix expression before `dot` starts (`a.b[c](d).e` as one operand)."""
    i = dot - 1
    while i >= 0:
        text = tokens[i][1]
        if text in _CLOSE and i in pairs:
            i = pairs[i]
        if i > 0 and tokens[i - 1][1] == ".":
            i -= 2
            continue
        if i > 0 and tokens[i][1] in ("(", "[") and tokens[i - 1][0] == "ident":
            i -= 1  # a call or an index on a name: f(x), x[0]
            continue
        return i
    return 0


def _receiver_problem(
    tokens: Sequence[Token], pairs: dict[int, int], start: int, dot: int
) -> str | None:
    span = tokens[start:dot]
    if span and span[0][1] == "[" and start in pairs and pairs[start] == dot - 1:
        return None  # a list literal; its size is checked with the other literals
    names = [text for _kind, text, _offset in span]
    if len(names) == 3 and names[0] in _FACT_MAPS and names[1] == "." and span[2][0] == "ident":
        return None  # one field: property.tags (its size is capped where facts enter CEL)
    if len(names) == 1 and names[0] in _FACT_MAPS:
        return f"iterates over {names[0]} as a whole (iterate over a list literal or one field)"
    return "iterates over a computed value (iterate over a list literal or one field)"


def _body_problem(tokens: Sequence[Token], opening: int, closing: int) -> str | None:
    for i in range(opening + 1, closing):
        kind, text, _offset = tokens[i]
        if kind == "punct" and text == "+":
            return "'+' inside a macro builds a new value for every element (move it outside)"
        if kind == "ident" and text == "matches" and i > 0 and tokens[i - 1][1] == ".":
            return "matches() inside a macro compiles its regular expression for every element"
    return None


def regex_weight(pattern: str) -> int:
    """How dear a pattern is to compile (see the module docstring); `pattern` as written in
    the expression, escapes doubled or not."""
    text = pattern.replace("\\\\", "\\")
    product = 1
    for repeat in _REPEAT.finditer(text):
        low, high = int(repeat.group(1)), repeat.group(2)
        # {n} -> n, {n,} -> n + 1 (at least one more than n), {n,m} -> m
        count = low if high is None else (low + 1 if high == "" else max(low, int(high)))
        product = min(product * max(1, count), 10**9)
    classes = 10 * len(_HEAVY_CLASS.findall(text)) + len(_LIGHT_CLASS.findall(text))
    return (1 + classes) * product


def _regex_problem(tokens: Sequence[Token]) -> str | None:
    weight = 0
    for i, (kind, text, _offset) in enumerate(tokens):
        if (
            kind != "ident"
            or text != "matches"
            or tokens[i + 1 : i + 2] != [("punct", "(", tokens[i + 1][2])]
        ):
            continue
        argument = tokens[i + 2 : i + 4]
        if (
            i == 0
            or tokens[i - 1][1] != "."
            or len(argument) < 2
            or argument[0][0] != "string"
            or argument[1][1] != ")"
        ):
            return 'matches() takes one string literal as its pattern: x.matches("^[0-9]{5}$")'
        weight += regex_weight(argument[0][1])
        if weight > MAX_REGEX_WEIGHT:
            return (
                f"regular expressions too dear to compile (weight {weight:,}, at most "
                f"{MAX_REGEX_WEIGHT}: fewer counted repetitions or Unicode classes such as \\w)"
            )
    return None
