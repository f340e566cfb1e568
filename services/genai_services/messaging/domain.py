"""Messaging's domain types."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Turn:
    author: str
    text: str
    from_member: bool


@dataclass(frozen=True)
class SuggestRepliesInput:
    turns: tuple[Turn, ...]
    suggestion_count: int


class Tone(enum.Enum):
    PROFESSIONAL = "professional and polished"
    FRIENDLY = "warm and friendly"
    CASUAL = "relaxed and informal"
    CONCISE = "short and direct"
    CONFIDENT = "confident and persuasive"


@dataclass(frozen=True)
class RewriteDraftInput:
    draft: str
    tone: Tone
    max_length_chars: int


class LengthLimiter:
    """Cuts streamed text at the last word boundary within a character limit.

    Text is released a whole word at a time, so what was already sent never has to
    be taken back; unary and streaming rewrites share this, and so agree exactly.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.sent = 0
        self.pending = ""
        self.truncated = False
        self.started = False

    def feed(self, delta: str) -> str:
        """Take new model text; return what may be sent now ('' when holding back)."""
        if self.truncated:
            return ""
        if not self.started:
            delta = delta.lstrip()
            self.started = bool(delta)
        self.pending += delta
        cut = max(self.pending.rfind(" "), self.pending.rfind("\n"))
        if cut < 0:
            return self._check_overflow()
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return self._release(ready)

    def _release(self, text: str) -> str:
        room = self.max_chars - self.sent
        if len(text) > room:
            self.truncated = True
            text = text[:room]
            # Never split a word: fall back to the last whitespace that fits.
            if room and not text[-1].isspace():
                boundary = max(text.rfind(" "), text.rfind("\n"))
                text = text[:boundary] if boundary >= 0 else ("" if self.sent else text)
            text = text.rstrip()
        self.sent += len(text)
        return text

    def _check_overflow(self) -> str:
        # A single word longer than the room left can never be sent whole.
        if self.sent + len(self.pending.rstrip()) > self.max_chars:
            return self._release(self.pending)
        return ""

    def finish(self) -> str:
        """Release what is held back once the model has finished."""
        if self.truncated:
            return ""
        text, self.pending = self.pending.rstrip(), ""
        return self._release(text)

    @property
    def done(self) -> bool:
        return self.truncated
