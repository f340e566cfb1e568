"""Per-case quality checks and ranking metrics, pure functions of inputs and outputs.

Edit distance and fuzzy similarity come from rapidfuzz. NDCG is the textbook formula
(linear gains, log2 discounts, as scikit-learn's `ndcg_score`): a dozen lines checked
against hand-computed values in tests/unit/test_eval_metrics.py, instead of pulling in
scikit-learn and scipy for one function.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

# --- shared text helpers -----------------------------------------------------------


def norm_space(text: str) -> str:
    """Lowercase, NFKC, typographic quotes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.lower().split())


def norm_words(text: str) -> str:
    """norm_space with punctuation dropped: for "the same words" comparisons."""
    return " ".join(re.sub(r"[^\w\s]", " ", norm_space(text)).split())


def contains_term(text: str, term: str) -> bool:
    """Whether `term` (alternatives separated by `|`) occurs in `text` as whole words.

    Case-insensitive; a thousands separator may be there or not ("4,500" matches "4500").
    """
    hay = norm_space(text)
    hay_plain = re.sub(r"(?<=\d)[,.](?=\d{3}\b)", "", hay)
    for alt in term.split("|"):
        needle = re.escape(norm_space(alt))
        pattern = rf"(?<!\w){needle}(?!\w)"
        if re.search(pattern, hay) or re.search(pattern, hay_plain):
            return True
    return False


# --- feed ------------------------------------------------------------------------


def dcg_at_k(gains: Sequence[float], k: int) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def ndcg_at_k(ranked_labels: Sequence[float], k: int = 3) -> float:
    """NDCG@k of labels listed in ranked order (linear gains); 0 when no label is positive."""
    ideal = dcg_at_k(sorted(ranked_labels, reverse=True), k)
    return dcg_at_k(ranked_labels, k) / ideal if ideal > 0 else 0.0


def expected_random_ndcg_at_k(labels: Sequence[float], k: int = 3) -> float:
    """NDCG@k of a uniformly random order, exactly.

    Each position's expected gain under a random order is the mean label.
    """
    ideal = dcg_at_k(sorted(labels, reverse=True), k)
    if ideal <= 0:
        return 0.0
    mean = sum(labels) / len(labels)
    return sum(mean / math.log2(i + 2) for i in range(min(k, len(labels)))) / ideal


def pairwise_accuracy(ranked_labels: Sequence[float]) -> float | None:
    """Share of pairs with different labels that the order puts the right way round.

    Returns:
        None when every label is equal (no pair to judge).
    """
    right = total = 0
    for i, a in enumerate(ranked_labels):
        for b in ranked_labels[i + 1 :]:
            if a != b:
                total += 1
                right += a > b
    return right / total if total else None


# --- rewrite ---------------------------------------------------------------------

_SCAFFOLD = [
    re.compile(r"</?\s*[a-zA-Z_][\w-]*(\s[^<>]*)?>"),  # <draft>, </draft>, <message from=...>
    re.compile(
        r"(?im)^\s*(tone|length|draft|rewrite|rewritten( draft| text| version)?|output|answer"
        r"|response|original|text)\s*:"
    ),
    re.compile(r"(?i)\bat most \d+ characters\b"),
    re.compile(
        r"(?i)\b(here is|here's|below is) (the|a|your) (rewritten|revised|rewrite|new version)"
    ),
    re.compile(r"(?i)\b(in|with) the requested tone\b"),
    re.compile(r"\{\{|\}\}"),
    re.compile(r"\[(your|recipient'?s?|name|company|date)[^\]]{0,30}\]", re.I),  # [Your Name]
]


def scaffolding(text: str) -> list[str]:
    """The prompt scaffolding found in a model answer: tags, "Tone:" lines, instruction echoes.

    Returns:
        The offending snippets; empty when the text is clean.
    """
    found = [m.group(0) for p in _SCAFFOLD for m in p.finditer(text)]
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
        found.append("wrapped in quotes")
    return found


def missing_terms(text: str, terms: Iterable[str]) -> list[str]:
    return [t for t in terms if not contains_term(text, t)]


def similarity(a: str, b: str) -> float:
    """rapidfuzz ratio of the normalized texts, 0-100."""
    return float(fuzz.ratio(norm_words(a), norm_words(b)))


# --- replies ---------------------------------------------------------------------

REPLY_MAX_CHARS = 200
_END = re.compile(r"[.!?\u2026)\"'\u00bb\u3002]$|[\U0001F300-\U0001FAFF\u2600-\u27BF]$")
_REPLY_DEBRIS = re.compile(
    r"[{}<>]|^\s*(reply|suggestion|answer|response|message)\s*\d*\s*:|from=|conversation:",
    re.I | re.M,
)
_DANGLING = {
    "and",
    "or",
    "but",
    "the",
    "a",
    "an",
    "to",
    "of",
    "for",
    "with",
    "in",
    "on",
    "at",
    "my",
    "your",
}


def reply_problems(reply: str, turns: Sequence[tuple[str, str]]) -> list[str]:
    """Why one suggested reply is not a short complete reply (empty list: it is one).

    Args:
        reply: The suggestion.
        turns: The conversation as (author, text), oldest first.
    """
    problems = []
    text = reply.strip()
    words = re.findall(r"\w+", text)
    if not words:
        return ["empty"]
    if not re.search(r"[^\W\d_]{2}", text):
        return ["no words"]
    if len(text) > REPLY_MAX_CHARS:
        problems.append("too long")
    if _REPLY_DEBRIS.search(text):
        problems.append("prompt or JSON debris")
    if len(text) >= REPLY_MAX_CHARS - 5:
        # A suggestion is a short reply: one that fills the cap was cut there.
        problems.append("cut at the length cap")
    elif not _END.search(text) and (
        len(words) < 2 or words[-1].lower() in _DANGLING or text[-1] in ",;:-"
    ):
        problems.append("incomplete")
    if len(words) >= 12 and len({w.lower() for w in words}) < len(words) / 3:
        problems.append("repetitive")
    if any(norm_words(text) == norm_words(author) for author, _ in turns):
        problems.append("a bare name")
    for i, (_, turn_text) in enumerate(turns):
        if fuzz.ratio(norm_words(text), norm_words(turn_text)) >= 85:
            problems.append(
                "repeats the last message" if i == len(turns) - 1 else "echoes the conversation"
            )
            break
    return problems


# --- search ----------------------------------------------------------------------

_EXPANSION_DEBRIS = re.compile(r"[{}\[\]<>\"\\|]|\w_\w|^\W*$")
# A word written twice in a row: a decoding loop ("users users users"), unless the query has it.
_STUTTER = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)
_STOP = {
    "a",
    "an",
    "and",
    "the",
    "of",
    "in",
    "on",
    "for",
    "to",
    "at",
    "by",
    "near",
    "with",
    "about",
    "is",
    "who",
    "how",
    "de",
    "jobs",
    "job",
    "i",
    "me",
    "my",
}


def topic_tokens(texts: Iterable[str]) -> set[str]:
    return {w for t in texts for w in norm_words(t).split() if w not in _STOP and len(w) > 1}


def on_topic(expansion: str, keywords: set[str]) -> bool:
    """Whether the expansion shares a keyword (or a 4+ character prefix of one) with the topic."""
    for w in topic_tokens([expansion]):
        for k in keywords:
            if w == k or (min(len(w), len(k)) >= 4 and (w.startswith(k) or k.startswith(w))):
                return True
    return False


def expansion_problems(
    expansions: Sequence[str], query: str, asked: int, keywords: set[str]
) -> list[str]:
    """Why a set of expanded queries is not valid (empty list: it is)."""
    problems = []
    if not expansions:
        return ["none returned"]
    if len(expansions) > asked:
        problems.append(f"{len(expansions)} returned, {asked} asked")
    normed = [norm_words(e) for e in expansions]
    if len(set(normed)) < len(normed):
        problems.append("duplicates")
    if norm_words(query) in normed:
        problems.append("repeats the query")
    for e in expansions:
        if _EXPANSION_DEBRIS.search(e):
            problems.append(f"debris: {e!r}")
        elif _STUTTER.search(e) and not _STUTTER.search(query):
            problems.append(f"repeated word: {e!r}")
        elif len(e) > 120:
            problems.append(f"too long: {e[:40]!r}...")
        elif not on_topic(e, keywords):
            problems.append(f"off topic: {e!r}")
    return problems


def edit_distance(a: str, b: str) -> int:
    return int(Levenshtein.distance(norm_space(a), norm_space(b)))
