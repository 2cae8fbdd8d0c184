"""Typed field access for TOML tables, with errors naming the file and the field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

MISSING = object()

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


def _describe(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kind)
    return _TYPE_NAMES.get(kind, kind.__name__)


class Fields:
    """A view of one TOML table: ``get`` checks presence and type, ``finish`` refuses unknown keys."""

    def __init__(self, table: Any, path: Path | str, prefix: str, error: type[ValueError]):
        self.path, self.prefix, self.error = str(path), prefix, error
        if not isinstance(table, dict):
            raise error(f"{self.path}: [{prefix}] must be a table")
        self.table = table
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, message: str):
        raise self.error(f"{self.path}: field '{self.name(key)}' {message}")

    def get(self, key: str, kind, default=MISSING, choices=None, low=None, high=None):
        """Return ``table[key]`` converted to ``kind``; ``default`` when absent (MISSING: required)."""
        self.used.add(key)
        if key not in self.table:
            if default is MISSING:
                self.fail(key, f"is missing: expected {_describe(kind)}")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.fail(key, f"is {value!r}: expected {_describe(kind)}")
        if choices is not None and value not in choices:
            self.fail(key, f"is {value!r}: expected one of {', '.join(map(str, choices))}")
        if low is not None and value < low:
            self.fail(key, f"is {value!r}: expected at least {low}")
        if high is not None and value > high:
            self.fail(key, f"is {value!r}: expected at most {high}")
        return value

    def numbers(self, key: str, default=MISSING, length=None) -> tuple[float, ...] | Any:
        """A list of numbers (optionally of a given length) as a tuple of floats."""
        value = self.get(key, list, default)
        if value is default and key not in self.table:
            return value
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            self.fail(key, f"is {value!r}: expected a list of numbers")
        if length is not None and len(value) != length:
            self.fail(key, f"has {len(value)} entries: expected {length}")
        return tuple(float(v) for v in value)

    def sub(self, key: str, default=MISSING) -> "Fields":
        table = self.get(key, dict, {} if default is MISSING else default)
        if key not in self.table and default is MISSING:
            self.fail(key, "is missing: expected a table")
        return Fields(table, self.path, self.name(key), self.error)

    def finish(self):
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used)) or "none"
            self.fail(unknown[0], f"is not a known field (known: {known})")
