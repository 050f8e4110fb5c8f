"""Printing helpers: aligned tables, stable JSON, byte rendering."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces (like kafka-topics.sh --describe, tidier)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def print_json(data: Any) -> None:
    """One JSON document on stdout, keys in a fixed order (the documented shapes)."""
    sys.stdout.write(dumps(data) + "\n")
    sys.stdout.flush()


def dumps(data: Any, indent: int = 0) -> str:
    """Indented JSON, but lists of plain values on one line (``"replicas": [1, 2, 3]``)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(data, dict) and data:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent + 2)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(data, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in data):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 2) for v in data) + "\n" + pad + "]"
    return json.dumps(data, separators=(", ", ": "))


def plural(count: int, noun: str) -> str:
    """``plural(1, "record")`` -> "1 record"; ``plural(2, "record")`` -> "2 records"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def int_list(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values) or "-"


def render(value: Any) -> str:
    """A key or value for text output: bytes as UTF-8 (undecodable bytes as \\x escapes)."""
    if value is None:
        return "null"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def jsonable(value: Any) -> Any:
    """A key or value for JSON output: bytes as UTF-8 text, JSON values as they are."""
    if value is None or isinstance(value, (bool, int, float, str, dict, list)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)
