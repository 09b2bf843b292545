"""Document-grounded schemas: restrict a JSON schema's free values to what the document's text contains.

A small local model (the offline default is a 135M-parameter one) reads values unreliably and, left to
itself, repeats a line item until its token budget runs out. It is much better at *choosing* than at
*writing*: :func:`ground_schema` rewrites the schema so that the grammar-constrained decoder can only emit

* numbers that are printed in the document (``4.08``, ``1,234.50``, ``1.234,50`` and ``-3`` read as numbers;
  a number printed only as a percentage, ``8%``, only for fields whose title or description speaks of a
  percent or rate),
* dates printed in the document, normalised to ISO 8601, for ``format: date`` strings,
* for free strings (no ``enum``, ``pattern`` or ``format``), a line of the document, a column of a line
  (text separated by two or more spaces or a tab) or the value after a ``Label:``; inside the entries of an
  array (table rows: line items), a column of a line that holds a number,
* and arrays of at most as many entries as the document has lines holding a number.

Where the document offers no candidate of a kind (no number printed, say), that part of the schema is left
as it was. An extraction envelope that asks for evidence (``{"data", "evidence"}``) is left whole: evidence
names fields, which the document does not print. The model still decides which value goes where; validation
still checks the result.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from polymodal.backends._schema import JsonSchema, walk_objects

#: Most candidates offered for one kind of value (a long document keeps its first ones).
MAX_CANDIDATES = 400

_NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:[,.]\d{3})+|\d+)(?:[.,]\d{1,4})?(?!\w)")
#: A number field whose title or description matches this is offered percentages too (``Tax 8%``).
_RATE_WORDS = re.compile(r"percent|rate|ratio|%", re.IGNORECASE)
_COLUMNS = re.compile(r"\s{2,}|\t")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DMY_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_NAMED_DATE = re.compile(
    r"\b([A-Z][a-z]{2,8})\.? (\d{1,2}),? (\d{4})\b|\b(\d{1,2}) ([A-Z][a-z]{2,8})\.? (\d{4})\b"
)
_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out[:MAX_CANDIDATES]


def parse_number(token: str) -> float | None:
    """A printed number as a float: the last ``.`` or ``,`` followed by 1-2 digits is the decimal mark."""
    text = token
    decimal_part = re.search(r"[.,](\d{1,2})$", text)
    if decimal_part:
        whole = re.sub(r"[.,]", "", text[: decimal_part.start()])
        text = f"{whole}.{decimal_part.group(1)}"
    else:
        text = re.sub(r"[.,]", "", text)
    try:
        return float(Decimal(text))
    except InvalidOperation:
        return None


def document_numbers(text: str, *, percentages: bool = True) -> list[float | int]:
    """Every number printed in ``text`` (integers stay integers), in reading order, without repeats.

    ``percentages=False`` leaves out numbers printed only as a percentage (``Tax 8%``): they are rates, not
    amounts.
    """
    found: list[float | int] = []
    for match in _NUMBER.finditer(text):
        value = parse_number(match.group(0))
        if value is None or (not percentages and text[match.end() : match.end() + 2].strip().startswith("%")):
            continue
        found.append(int(value) if value.is_integer() else value)
    return _unique(found)


def document_dates(text: str) -> list[str]:
    """Dates printed in ``text`` (ISO, day/month/year, ``March 5, 2025``, ``5 March 2025``) as ISO 8601."""
    found: list[str] = []
    candidates: list[tuple[int, int, int]] = []
    candidates += [(int(y), int(m), int(d)) for y, m, d in _ISO_DATE.findall(text)]
    candidates += [(int(y), int(m), int(d)) for d, m, y in _DMY_DATE.findall(text)]
    for match in _NAMED_DATE.finditer(text):
        month_first, day1, year1, day2, month_second, year2 = match.groups()
        month = _MONTHS.get((month_first or month_second or "").lower())
        if month is not None:
            candidates.append((int(year1 or year2), month, int(day1 or day2)))
    for year, month, day in candidates:
        try:
            found.append(datetime.date(year, month, day).isoformat())
        except ValueError:
            continue
    return _unique(found)


def document_strings(text: str) -> list[str]:
    """Lines of ``text``, their columns and the values after ``Label:`` (each with a letter or digit)."""
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        found.append(line)
        for column in _COLUMNS.split(line):
            column = column.strip()
            found.append(column)
            if ":" in column:
                found.append(column.split(":", 1)[1].strip())
    return _unique(s for s in found if s and re.search(r"[^\W_]", s))


def row_strings(text: str) -> list[str]:
    """Columns with a letter in them, of the lines that hold a number (the cells of table rows)."""
    cells = (
        column.strip()
        for line in text.splitlines()
        if _NUMBER.search(line)
        for column in _COLUMNS.split(line.strip())
    )
    return _unique(c for c in cells if re.search(r"[^\W\d_]", c))


def _row_definitions(schema: JsonSchema) -> set[str]:
    """Names of the ``$defs`` that arrays hold as entries (directly or through ``anyOf``)."""
    names: set[str] = set()

    def refs(node: Any) -> list[str]:
        if not isinstance(node, dict):
            return []
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        for option in node.get("anyOf", []):
            found += refs(option)
        return found

    for node in walk_objects(schema):
        if node.get("type") == "array":
            names.update(refs(node.get("items")))
    return names


def count_number_lines(text: str) -> int:
    """Lines of ``text`` that hold at least one number (an upper bound for line items)."""
    return sum(1 for line in text.splitlines() if _NUMBER.search(line))


def ground_schema(schema: JsonSchema, text: str) -> JsonSchema:
    """A copy of ``schema`` whose free values must come from ``text`` (see the module docstring)."""
    if "evidence" in schema.get("properties", {}):
        return copy.deepcopy(schema)
    numbers = document_numbers(text)
    amounts = document_numbers(text, percentages=False) or numbers
    integers = [n for n in numbers if isinstance(n, int)]
    dates = document_dates(text)
    strings = document_strings(text)
    cells = row_strings(text) or strings
    max_items = max(1, count_number_lines(text))
    rows = _row_definitions(schema)

    def visit(node: Any, in_row: bool = False) -> Any:
        if isinstance(node, list):
            return [visit(item, in_row) for item in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") == "array":
            node = {k: visit(v, in_row or k == "items") for k, v in node.items()}
        else:
            node = {key: visit(value, in_row) for key, value in node.items()}
        if "enum" in node or "const" in node or "pattern" in node:
            return node
        kind = node.get("type")
        described = {k: v for k, v in node.items() if k in ("title", "description", "default")}
        if kind == "number" and numbers:
            wants_rate = _RATE_WORDS.search(f"{node.get('title', '')} {node.get('description', '')}")
            return {**described, "enum": numbers if wants_rate else amounts}
        if kind == "integer" and integers:
            return {**described, "enum": integers}
        if kind == "string":
            if node.get("format") == "date":
                return {**described, "enum": dates} if dates else node
            if "format" not in node and strings:
                return {**described, "enum": cells if in_row else strings}
        if kind == "array" and "maxItems" not in node:
            node["maxItems"] = max_items
        return node

    grounded: JsonSchema = visit(copy.deepcopy(schema))
    for name, definition in schema.get("$defs", {}).items():
        if name in rows:
            grounded["$defs"][name] = visit(copy.deepcopy(definition), True)
    return grounded


__all__ = [
    "count_number_lines",
    "document_dates",
    "document_numbers",
    "document_strings",
    "ground_schema",
    "parse_number",
    "row_strings",
]
