"""Messaging's domain types."""

from __future__ import annotations

import enum
import re
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


_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def _last_space(text: str) -> int:
    found = _LAST_SPACE.search(text)
    return found.start() if found else -1


class LengthLimiter:
    """Cuts streamed text at the last word boundary within a character limit.

    Text is released a whole word at a time and trailing whitespace is held back until
    a word follows it, so what was sent never has to be taken back and never ends in
    whitespace. Unary and streaming rewrites share this, so they agree exactly.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.sent = 0
        self.pending = ""
        self.truncated = False

    def feed(self, delta: str) -> str:
        """Take new model text; return what may be sent now ('' when holding back)."""
        if self.truncated:
            return ""
        if not self.sent and not self.pending:
            delta = delta.lstrip()
        self.pending += delta
        cut = _last_space(self.pending)
        if cut < 0:
            # One word so far; if it alone overflows the room left it can never fit.
            return self._release(self.pending) if self.sent + len(self.pending) > self.max_chars else ""
        ready = self.pending[:cut].rstrip()
        if not ready.strip():
            return ""
        self.pending = self.pending[len(ready) :]
        return self._release(ready)

    def _release(self, text: str) -> str:
        room = self.max_chars - self.sent
        if len(text) > room:
            self.truncated = True
            head = text[:room]
            if not text[room].isspace():
                # Never split a word: back off to the last boundary that fits; only a
                # first word longer than the whole limit is cut inside.
                boundary = _last_space(head)
                head = head[:boundary] if boundary >= 0 else ("" if self.sent else head)
            text = head.rstrip()
        self.sent += len(text)
        return text

    def finish(self) -> str:
        """Release what is held back once the model has finished."""
        if self.truncated:
            return ""
        text, self.pending = self.pending.rstrip(), ""
        return self._release(text) if text.strip() else ""

    @property
    def done(self) -> bool:
        return self.truncated
