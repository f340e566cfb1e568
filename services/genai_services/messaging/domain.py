"""Messaging's domain types."""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

# One source of truth for a suggestion's length (the proto documents it too).
REPLY_MAX_CHARS = 200


@dataclass(frozen=True)
class Turn:
    author: str
    text: str
    from_member: bool


@dataclass(frozen=True)
class SuggestRepliesInput:
    turns: tuple[Turn, ...]
    suggestion_count: int


_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]{2}")
# Tags, JSON and labels are the prompt's, never part of a reply a member would send.
_DEBRIS = re.compile(r"[{}<>]|^\s*(reply|suggestion|answer|response|message)\s*\d*\s*:|from=", re.I)
_QUOTES = "\"'\u201c\u201d\u2018\u2019"
# A reply that stops on one of these words was cut mid-sentence.
_DANGLING = frozenset(
    "and or but the a an to of for with in on at my your our their is are was".split()
)
# A suggestion this close to a message of the conversation (0-1) repeats it.
ECHO_SIMILARITY = 0.85


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def reply_is_usable(reply: str, turns: Iterable[Turn]) -> bool:
    """Whether a suggested reply is one a member could send as it is.

    A usable reply has words, fits REPLY_MAX_CHARS, carries no tags or JSON, ends as
    a sentence or a phrase (not on a dangling "and"/"the"), is not one word repeated,
    is not a bare author name and does not repeat a message of the conversation.

    Args:
        reply: the suggestion, whitespace already normalised.
        turns: the conversation it answers.
    """
    words = _WORD.findall(reply)
    if not words or not _LETTERS.search(reply) or len(reply) > REPLY_MAX_CHARS or _DEBRIS.search(reply):
        return False
    if reply[-1] in ",;:-" or (reply[-1].isalnum() and (len(words) < 2 or words[-1].lower() in _DANGLING)):
        return False
    if len(words) >= 12 and len({w.lower() for w in words}) < len(words) / 3:
        return False
    norm = _norm(reply)
    for turn in turns:
        if norm == _norm(turn.author):
            return False
        if difflib.SequenceMatcher(None, norm, _norm(turn.text), autojunk=False).ratio() >= ECHO_SIMILARITY:
            return False
    return True


def usable_replies(candidates: Iterable[str], turns: Iterable[Turn]) -> tuple[str, ...]:
    """The candidates that pass `reply_is_usable`, cleaned, without duplicates, in order.

    Whitespace is normalised and quotes around a whole reply removed; a reply as close to
    one kept before it as an echo is to a message (ECHO_SIMILARITY, after case and
    punctuation) is a duplicate: "Thanks, Ana!" and "Thank you, Ana!" are one suggestion.
    """
    turns = tuple(turns)
    kept: list[str] = []
    seen: list[str] = []
    for candidate in candidates:
        reply = " ".join(candidate.split())
        if len(reply) >= 2 and reply[0] in _QUOTES and reply[-1] in _QUOTES:
            reply = reply[1:-1].strip()
        if not reply or not reply_is_usable(reply, turns):
            continue
        norm = _norm(reply)
        if any(difflib.SequenceMatcher(None, norm, s, autojunk=False).ratio() >= ECHO_SIMILARITY for s in seen):
            continue
        seen.append(norm)
        kept.append(reply)
    return tuple(kept)


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


# Sentences end at . ! ? or … before whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|\n+")
# Normalised characters of a rewrite's opening compared with the prompt's example answers.
COPY_CHECK_CHARS = 24
# A sentence this long (words) written twice is a loop, not a stylistic repeat.
REPEAT_MIN_WORDS = 3


class RewriteGuard:
    """Two ways a small model's rewrite goes off the rails, caught while it streams.

    - Copying: with a long draft the model may answer with one of the prompt's example
      rewrites (a German sentence about Bosch for an English draft about Rotterdam). The
      opening is held back until COPY_CHECK_CHARS show whether it is an example's
      opening that the draft does not share; if so, `copied` is that example's index
      and nothing was released, so the caller can ask again without it.
    - Looping: greedy decoding can write one sentence over and over. Text streams on as
      it comes, except a sentence that so far reads like one already written: held back
      until it turns into something new (released) or ends as a repeat (dropped, and
      `done` is set: the rewrite ends there).
    """

    def __init__(self, draft: str, example_answers: Iterable[str]) -> None:
        own = _norm(draft)
        self._openings = {i: o for i, o in enumerate(_norm(a)[:COPY_CHECK_CHARS] for a in example_answers) if o not in own}
        self._checked = not self._openings
        self.copied: int | None = None
        self.done = False
        self._text = ""
        self._sent = 0
        self._start = 0  # where the current sentence begins
        self._seen: set[str] = set()

    def feed(self, delta: str) -> str:
        """Take new model text; return what may be passed on now."""
        if self.copied is not None or self.done:
            return ""
        self._text += delta
        if not self._checked:
            opening = _norm(self._text)
            if len(opening) < COPY_CHECK_CHARS:
                return ""
            self._checked = True
            self.copied = next((i for i, o in self._openings.items() if o == opening[:COPY_CHECK_CHARS]), None)
            if self.copied is not None:
                return ""
        while end := _SENTENCE_END.search(self._text, self._start):
            if self._is_repeat(self._text[self._start : end.start()]):
                self.done = True
                return self._release(self._start)
            self._seen.add(_norm(self._text[self._start : end.start()]))
            self._start = end.end()
        partial = _norm(self._text[self._start :])
        held = partial and any(s.startswith(partial) for s in self._seen)
        return self._release(self._start if held else len(self._text))

    def finish(self) -> str:
        """What is still held once the model has finished."""
        if self.copied is not None or self.done:
            return ""
        # Shorter than COPY_CHECK_CHARS: too short to be an example's answer (none is).
        if self._is_repeat(self._text[self._start :]):
            self.done = True
            return self._release(self._start)
        return self._release(len(self._text))

    def _is_repeat(self, sentence: str) -> bool:
        norm = _norm(sentence)
        return len(norm.split()) >= REPEAT_MIN_WORDS and norm in self._seen

    def _release(self, upto: int) -> str:
        out = self._text[self._sent : upto]
        self._sent = max(self._sent, upto)
        return out
