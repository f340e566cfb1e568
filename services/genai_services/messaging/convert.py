"""The one place where messaging protos and messaging domain types meet."""

from __future__ import annotations

from collections.abc import Sequence

from genai.messaging.v1 import messaging_service_pb2 as pb

from genai_core.validation import Violations
from genai_services.messaging.domain import RewriteDraftInput, SuggestRepliesInput, Tone, Turn

TONES = {
    pb.TONE_PROFESSIONAL: Tone.PROFESSIONAL,
    pb.TONE_FRIENDLY: Tone.FRIENDLY,
    pb.TONE_CASUAL: Tone.CASUAL,
    pb.TONE_CONCISE: Tone.CONCISE,
    pb.TONE_CONFIDENT: Tone.CONFIDENT,
}


def suggest_replies_from_pb(request: pb.SuggestRepliesRequest) -> SuggestRepliesInput:
    """Raises: InvalidRequest naming every bad field."""
    v = Violations()
    v.count("turns", len(request.turns), minimum=1, maximum=30, what="turns")
    turns = tuple(
        Turn(
            author=v.text(f"turns[{i}].author", t.author, max_chars=120),
            text=v.text(f"turns[{i}].text", t.text, max_chars=2000),
            from_member=t.from_member,
        )
        for i, t in enumerate(request.turns[:30])
    )
    count = v.int_range("suggestion_count", request.suggestion_count, minimum=1, maximum=5)
    v.raise_if_any()
    return SuggestRepliesInput(turns=turns, suggestion_count=count)


def rewrite_draft_from_pb(request: pb.RewriteDraftRequest | pb.StreamRewriteDraftRequest) -> RewriteDraftInput:
    """Convert either rewrite request (their fields are the same).

    Raises: InvalidRequest naming every bad field."""
    v = Violations()
    draft = v.text("draft", request.draft, max_chars=4000)
    v.enum("tone", request.tone, list(TONES), {k: pb.Tone.Name(k) for k in TONES})
    limit = v.int_range("max_length_chars", request.max_length_chars, minimum=20, maximum=2000)
    v.raise_if_any()
    return RewriteDraftInput(draft=draft, tone=TONES[request.tone], max_length_chars=limit)


def suggest_replies_to_pb(suggestions: Sequence[str]) -> pb.SuggestRepliesResponse:
    """The response without usage (the servicer adds it)."""
    return pb.SuggestRepliesResponse(suggestions=list(suggestions))
