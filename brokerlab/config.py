"""Configuration with Kafka's key names (``min.insync.replicas``), typed, from files and flags.

Each component declares its keys as ``ConfigKey``s; values come from a Kafka-style properties
file and ``--config key=value`` flags, later ones winning. Unknown keys are an error, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


class ConfigError(ValueError):
    pass


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class ConfigKey:
    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str = ""


def int_key(name: str, default: int, doc: str = "") -> ConfigKey:
    return ConfigKey(name, int, default, doc)


def bool_key(name: str, default: bool, doc: str = "") -> ConfigKey:
    return ConfigKey(name, _parse_bool, default, doc)


def str_key(name: str, default: str, doc: str = "") -> ConfigKey:
    return ConfigKey(name, str, default, doc)


def choice_key(name: str, default: str, choices: Iterable[str], doc: str = "") -> ConfigKey:
    allowed = tuple(choices)

    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return ConfigKey(name, parse, default, doc)


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}``."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected key=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def read_properties(text: str) -> dict[str, str]:
    """Kafka's server.properties format: ``key=value`` lines, ``#`` comments."""
    lines = [line.strip() for line in text.splitlines()]
    return parse_pairs(line for line in lines if line and not line.startswith(("#", "!")))


def require_positive(values: Mapping[str, int]) -> None:
    """ConfigError naming the first key whose value is not positive."""
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")


def resolve(keys: Iterable[ConfigKey], raw: Mapping[str, str | Any]) -> dict[str, Any]:
    """Typed values for every key: defaults overridden by ``raw`` (strings are parsed)."""
    by_name = {key.name: key for key in keys}
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
    values = {name: key.default for name, key in by_name.items()}
    for name, value in raw.items():
        if isinstance(value, str):
            try:
                value = by_name[name].parse(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        values[name] = value
    return values
