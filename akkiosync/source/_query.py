"""What ``source.table`` and ``source.query`` mean as SQL text, before any database is asked:
a table name's schema and quoting, a query made fit to wrap, and what a query's own LIMIT or
ORDER BY does to a keyset read.
"""

from __future__ import annotations

import re


def split_table(text: str) -> tuple[str | None, str]:
    """``source.table`` as (schema or None, name). A dot separates the schema; a part in
    double quotes is taken as written, dots included (``"odd.name"``, ``public."odd.name"``;
    ``""`` is a quote inside). ``ValueError`` for anything else."""
    parts: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            end = i + 1
            while (end := text.find('"', end)) >= 0 and text.startswith('""', end):
                end += 2
            if end < 0:
                raise ValueError(f"{text!r}: a double quote is not closed")
            parts.append(text[i + 1 : end].replace('""', '"'))
            i = end + 1
        else:
            end = len(text) if (dot := text.find(".", i)) < 0 else dot
            parts.append(text[i:end])
            if '"' in parts[-1]:
                raise ValueError(f'{text!r}: quote a whole name ("odd.name"), not part of it')
            i = end
        if i == len(text):
            break
        if text[i] != ".":
            raise ValueError(f"{text!r}: a quoted name must end at a dot or the end")
        i += 1
    if len(parts) > 2 or not all(parts):
        raise ValueError(
            f"{text!r}: give a table name or schema.table; double-quote a name that holds a dot "
            '(public."odd.name")'
        )
    return (parts[0] if len(parts) == 2 else None), parts[-1]


def wrappable(query: str) -> str:
    """``source.query`` as it can be wrapped in a subquery: its trailing ``;`` and whole
    comment lines dropped, and a newline at the end, so that a ``-- comment`` ending its last
    line does not swallow the closing parenthesis."""
    lines = query.strip().splitlines()
    while lines and lines[-1].strip().startswith("--"):
        lines.pop()
    return "\n".join(lines).strip().rstrip(";").rstrip() + "\n"


_LIMITING = re.compile(r"\b(LIMIT|FETCH\s+(?:FIRST|NEXT)|ORDER\s+BY)\b", re.IGNORECASE)


def query_warnings(query: str) -> list[str]:
    """What a query's own LIMIT or ORDER BY does once the run wraps it (a word inside a
    string or comment may be taken for one: a warning, never a refusal)."""
    found = {" ".join(m[1].upper().split()) for m in _LIMITING.finditer(query)}
    warnings = []
    if found - {"ORDER BY"}:
        warnings.append(
            f"{'/'.join(sorted(found - {'ORDER BY'}))} in the query: each run reads only the "
            "rows it lets through, so rows past the limit are never sent; filter with WHERE "
            "instead"
        )
    if "ORDER BY" in found:
        warnings.append(
            "ORDER BY in the query is ignored: each run reads in (watermark, key) order"
        )
    return warnings
