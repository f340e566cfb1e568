"""Feed ranking's domain types: what the servicer validates in and hands back out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    member_id: str
    headline: str
    interests: tuple[str, ...]
    recent_activity: tuple[str, ...]


@dataclass(frozen=True)
class Post:
    post_id: str
    author: str
    text: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class RankPostsInput:
    member: Member
    candidates: tuple[Post, ...]
    # Reasons are written for this many of the best-ranked posts only (0: none).
    explain_top_k: int = 0


@dataclass(frozen=True)
class RankedPost:
    post_id: str
    relevance_score: float
    reason: str
