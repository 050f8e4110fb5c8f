"""logfmt lines for the broker's structured log (``ts=... level=info node=broker-1 event=X k=v``).

A local formatter until the shared ``brokerlab/logfmt.py`` lands; same shape: bare values when
they are safe, double-quoted (with ``\\`` and ``"`` escaped) when they hold spaces, ``=``, quotes
or nothing. Lists and tuples print as ``[1,2,3]``.
"""

from __future__ import annotations

from typing import Any, Mapping


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        text = "[" + ",".join(format_value(v) for v in items) + "]"
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    return text


def format_line(fields: Mapping[str, Any]) -> str:
    """One logfmt line (no newline) from ordered ``key -> value`` pairs."""
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())
