"""Which `property` fields a CEL expression reads, found from its text.

The cel package reports the variables an expression uses, not the fields it selects. Trigger
evaluation on every polled row is the hot path, and converting a whole row into a CEL context
costs about 2 microseconds per field, so propready builds the context from only the fields the
triggers read. `property.name`, `has(property.name)` and `property["name"]` are recognised
outside string literals; any other use of `property` (passing the whole map to a macro, say)
returns None, meaning "all fields".
"""

from __future__ import annotations

import re

_STRING = re.compile(
    r"""(?:[rRbB]{0,2})("""
    r'''"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\''''
    r"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
)
_DOT_FIELD = re.compile(r"\b(property|previous)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
_INDEX_FIELD = re.compile(r"""\b(property|previous)\s*\[\s*(["'])([^"']+)\2\s*\]""")
_BARE = re.compile(r"\b(property|previous)\b")


def referenced_fields(source: str, variable: str = "property") -> frozenset[str] | None:
    """The fields of `variable` that `source` reads, or None when it may read any field."""
    fields = {m.group(3) for m in _INDEX_FIELD.finditer(source) if m.group(1) == variable}
    # Index forms are taken; blank them (and string literals) before looking for the rest.
    code = _STRING.sub('""', _INDEX_FIELD.sub('""', source))
    selected = 0
    for match in _DOT_FIELD.finditer(code):
        if match.group(1) != variable:
            continue
        if match.group(3):  # property.exists(...): a macro over the whole map
            return None
        fields.add(match.group(2))
        selected += 1
    uses = sum(1 for m in _BARE.finditer(code) if m.group(1) == variable)
    return frozenset(fields) if uses == selected else None


def uses_variable(source: str, variable: str) -> bool:
    """Whether `source` mentions `variable` outside string literals."""
    code = _STRING.sub('""', source)
    return re.search(rf"\b{re.escape(variable)}\b", code) is not None
