"""Request validation that reports every bad field at once, named as in the proto."""

from __future__ import annotations

from collections.abc import Sequence

from genai_core.errors import FieldViolation, InvalidRequest


class Violations:
    """Collects FieldViolations; `raise_if_any` ends validation with InvalidRequest."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def text(self, field: str, value: str, *, max_chars: int, required: bool = True) -> str:
        """Check a free-text field; returns it stripped of surrounding whitespace."""
        return self.opaque(field, value, max_chars=max_chars, required=required).strip()

    def opaque(self, field: str, value: str, *, max_chars: int, required: bool = True) -> str:
        """Check a field the caller gets back (an id); returns it exactly as given.

        The checks are `text`'s (whitespace alone counts as empty), but the value is
        never trimmed: `"a"` and `"a "` are two ids, and each is echoed as sent.
        """
        if required and not value.strip():
            self.add(field, "must not be empty")
        elif len(value) > max_chars:
            self.add(field, f"must be at most {max_chars} characters, got {len(value)}")
        elif "\x00" in value:
            self.add(field, "must not contain NUL characters")
        return value

    def texts(self, field: str, values: Sequence[str], *, max_items: int, max_chars: int) -> list[str]:
        """Check a repeated free-text field; empty entries are errors, not skipped."""
        if len(values) > max_items:
            self.add(field, f"must have at most {max_items} entries, got {len(values)}")
            return []
        return [self.text(f"{field}[{i}]", v, max_chars=max_chars) for i, v in enumerate(values)]

    def count(self, field: str, n: int, *, minimum: int, maximum: int, what: str = "entries") -> None:
        if not minimum <= n <= maximum:
            self.add(field, f"must have {minimum} to {maximum} {what}, got {n}")

    def int_range(self, field: str, value: int, *, minimum: int, maximum: int) -> int:
        if not minimum <= value <= maximum:
            self.add(field, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def enum(self, field: str, value: int, known: Sequence[int], name_of: dict[int, str]) -> int:
        """Reject UNSPECIFIED (0) and numbers this server does not know."""
        if value == 0:
            self.add(field, "must be set")
        elif value not in known:
            self.add(field, f"unknown value {value}; known: {', '.join(name_of[k] for k in known)}")
        return value

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidRequest(self.items)
