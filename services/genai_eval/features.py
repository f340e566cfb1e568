"""Per feature: the request a case becomes, how its answer is judged, and the feature's metrics.

Each feature turns one case into one or more calls (feed: the candidates as given and
shuffled), judges each answer against the case's labels, and sums the judgements into
metrics. A call that ends in an error status fails every check of its case.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from google.protobuf.json_format import MessageToDict

from genai_eval import metrics as m


@dataclass
class Call:
    """One RPC the eval makes for a case."""

    feature: str
    case: dict[str, Any]
    variant: str  # "" for the case as written; "shuffled" for feed's reordered candidates
    method: str  # attribute name on the stub
    request: Any
    order: list[str] = field(default_factory=list)  # feed: post ids in the order sent


@dataclass
class Outcome:
    """A finished call: the answer (or error) and the judgement of it."""

    call: Call
    latency_s: float
    code: str  # "OK" or the gRPC status code's name
    error: str = ""
    response: dict[str, Any] | None = None
    judgement: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # times the server turned the call away for load before this answer

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


class Feature:
    name: str
    stub: Callable[[Any], Any]

    def calls(self, case: dict[str, Any]) -> list[Call]:
        raise NotImplementedError

    def judge(self, outcome: Outcome) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self, outcomes: Sequence[Outcome]) -> dict[str, float]:
        raise NotImplementedError

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        """The labels, for the side-by-side dump."""
        raise NotImplementedError


class Feed(Feature):
    name = "feed"
    stub = feed_grpc.FeedServiceStub

    def calls(self, case: dict[str, Any]) -> list[Call]:
        member = feed_pb.MemberProfile(**case["member"])
        posts = [feed_pb.CandidatePost(**c) for c in case["candidates"]]
        shuffled = list(posts)
        # A fixed order per case, never the one written, so position bias shows.
        rng = random.Random(case["id"])
        while len(shuffled) > 1 and [p.post_id for p in shuffled] == [p.post_id for p in posts]:
            rng.shuffle(shuffled)
        return [
            Call(
                self.name,
                case,
                variant,
                "RankPosts",
                feed_pb.RankPostsRequest(member=member, candidates=ps),
                [p.post_id for p in ps],
            )
            for variant, ps in (("", posts), ("shuffled", shuffled))
        ]

    def judge(self, outcome: Outcome) -> dict[str, Any]:
        labels: dict[str, int] = outcome.call.case["labels"]
        if not outcome.ok:
            return {"ndcg_at_3": 0.0, "pairwise_accuracy": 0.0, "complete": False}
        ranked = [p["post_id"] for p in outcome.response["ranked_posts"]]
        complete = sorted(ranked) == sorted(labels)
        # Missing ids count as ranked last, in request order: a partial answer is judged,
        # not dropped.
        order = [i for i in dict.fromkeys(ranked) if i in labels]
        order += [i for i in outcome.call.order if i not in order]
        graded = [labels[i] for i in order]
        return {
            "ranked": order,
            "ranked_labels": graded,
            "ndcg_at_3": m.ndcg_at_k(graded, 3),
            "pairwise_accuracy": m.pairwise_accuracy(graded),
            "random_ndcg_at_3": m.expected_random_ndcg_at_k(list(labels.values()), 3),
            "complete": complete,
        }

    def summarize(self, outcomes: Sequence[Outcome]) -> dict[str, float]:
        def of(variant: str, key: str) -> float:
            vals = [o.judgement[key] for o in outcomes if o.call.variant == variant]
            return _mean([v for v in vals if v is not None])

        ndcg, ndcg_s = of("", "ndcg_at_3"), of("shuffled", "ndcg_at_3")
        pair, pair_s = of("", "pairwise_accuracy"), of("shuffled", "pairwise_accuracy")
        return {
            "ndcg_at_3": ndcg,
            "ndcg_at_3_shuffled": ndcg_s,
            "position_bias_ndcg": abs(ndcg - ndcg_s),
            "pairwise_accuracy": pair,
            "pairwise_accuracy_shuffled": pair_s,
            "position_bias_pairwise": abs(pair - pair_s),
            "random_ndcg_at_3": _mean(
                [
                    o.judgement.get("random_ndcg_at_3", 0.0)
                    for o in outcomes
                    if o.call.variant == "" and o.ok
                ]
            ),
            "complete_answers": _rate([o.judgement["complete"] for o in outcomes]),
        }

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        return {"labels": case["labels"]}


class Rewrite(Feature):
    name = "rewrite"
    stub = msg_grpc.MessagingServiceStub

    def calls(self, case: dict[str, Any]) -> list[Call]:
        request = msg_pb.RewriteDraftRequest(
            draft=case["draft"],
            tone=msg_pb.Tone.Value(case["tone"]),
            max_length_chars=case["max_length_chars"],
        )
        return [Call(self.name, case, "", "RewriteDraft", request)]

    def judge(self, outcome: Outcome) -> dict[str, Any]:
        case = outcome.call.case
        if not outcome.ok:
            return dict.fromkeys(
                ("scaffold_free", "within_limit", "meaning_kept", "changed", "valid"), False
            )
        text = outcome.response["text"]
        scaffold = m.scaffolding(text)
        missing = m.missing_terms(text, case["key_terms"])
        checks = {
            "scaffold_free": not scaffold,
            "within_limit": len(text) <= case["max_length_chars"],
            "meaning_kept": not missing,
            "changed": bool(text.strip()) and m.norm_words(text) != m.norm_words(case["draft"]),
        }
        return {
            **checks,
            "valid": all(checks.values()),
            "scaffolding": scaffold,
            "missing_terms": missing,
            "similarity": m.similarity(text, case["draft"]),
        }

    def summarize(self, outcomes: Sequence[Outcome]) -> dict[str, float]:
        out = {
            k: _rate([o.judgement[k] for o in outcomes])
            for k in ("scaffold_free", "within_limit", "meaning_kept", "changed", "valid")
        }
        for tone in sorted({o.call.case["tone"] for o in outcomes}):
            of_tone = [o.judgement["valid"] for o in outcomes if o.call.case["tone"] == tone]
            out[f"valid.{tone.removeprefix('TONE_').lower()}"] = _rate(of_tone)
        return out

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        return {"key_terms": case["key_terms"], "max_length_chars": case["max_length_chars"]}


class Replies(Feature):
    name = "replies"
    stub = msg_grpc.MessagingServiceStub

    def calls(self, case: dict[str, Any]) -> list[Call]:
        request = msg_pb.SuggestRepliesRequest(
            turns=[msg_pb.ConversationTurn(**t) for t in case["turns"]],
            suggestion_count=case["suggestion_count"],
        )
        return [Call(self.name, case, "", "SuggestReplies", request)]

    def judge(self, outcome: Outcome) -> dict[str, Any]:
        case = outcome.call.case
        keys = ("count_ok", "distinct", "complete", "no_echo", "valid")
        if not outcome.ok:
            return dict.fromkeys(keys, False)
        replies = outcome.response["suggestions"]
        turns = [(t["author"], t["text"]) for t in case["turns"]]
        problems = {r: m.reply_problems(r, turns) for r in replies}
        echo = {"repeats the last message", "echoes the conversation", "prompt or JSON debris"}
        checks = {
            "count_ok": len(replies) == case["suggestion_count"],
            "distinct": len({m.norm_words(r) for r in replies}) == len(replies),
            "complete": all(not (set(p) - echo) for p in problems.values()),
            "no_echo": all(not (set(p) & echo) for p in problems.values()),
        }
        return {
            **checks,
            "valid": all(checks.values()),
            "problems": {r: p for r, p in problems.items() if p},
        }

    def summarize(self, outcomes: Sequence[Outcome]) -> dict[str, float]:
        return {
            "valid_sets": _rate([o.judgement["valid"] for o in outcomes]),
            **{
                k: _rate([o.judgement[k] for o in outcomes])
                for k in ("count_ok", "distinct", "complete", "no_echo")
            },
        }

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        return {"suggestion_count": case["suggestion_count"]}


class Search(Feature):
    name = "search"
    stub = search_grpc.SearchServiceStub

    def calls(self, case: dict[str, Any]) -> list[Call]:
        request = search_pb.UnderstandQueryRequest(
            query=case["query"], locale=case["locale"], expansion_count=case["expansion_count"]
        )
        return [Call(self.name, case, "", "UnderstandQuery", request)]

    def judge(self, outcome: Outcome) -> dict[str, Any]:
        case = outcome.call.case
        gold = {(e["type"], e["start"], e["end"]) for e in case["entities"]}
        if not outcome.ok:
            return {
                "intent_ok": False,
                "gold_entities": len(gold),
                "found_entities": 0,
                "matched_entities": 0,
                "corrected_exactly": False,
                "false_correction": False,
                "expansions_valid": False,
            }
        r = outcome.response
        found = {(e["type"], e["start_offset_chars"], e["end_offset_chars"]) for e in r["entities"]}
        corrected = r.get("corrected_query")
        changed = corrected is not None and m.norm_space(corrected) != m.norm_space(case["query"])
        exact = (
            bool(case["misspelled"])
            and changed
            and any(m.norm_space(corrected) == m.norm_space(alt) for alt in case["corrected_query"])
        )
        asked = case["expansion_count"] or 3
        keywords = m.topic_tokens(
            [case["query"], *case["topic_keywords"], *(case["corrected_query"] or [])]
        )
        problems = m.expansion_problems(r["expanded_queries"], case["query"], asked, keywords)
        return {
            "intent_ok": r["intent"] == case["intent"],
            "gold_entities": len(gold),
            "found_entities": len(found),
            "matched_entities": len(gold & found),
            "corrected_exactly": exact,
            "false_correction": not case["misspelled"] and changed,
            "correction_edit_distance": (
                m.edit_distance(corrected or case["query"], case["corrected_query"][0])
                if case["misspelled"]
                else None
            ),
            "expansions_valid": not problems,
            "expansion_problems": problems,
        }

    def summarize(self, outcomes: Sequence[Outcome]) -> dict[str, float]:
        j = [o.judgement for o in outcomes]
        mis = [o.judgement for o in outcomes if o.call.case["misspelled"]]
        right = [o.judgement for o in outcomes if not o.call.case["misspelled"]]
        found = sum(x["found_entities"] for x in j)
        return {
            "intent_accuracy": _rate([x["intent_ok"] for x in j]),
            "entity_precision": sum(x["matched_entities"] for x in j) / found if found else 0.0,
            "entity_recall": sum(x["matched_entities"] for x in j)
            / max(1, sum(x["gold_entities"] for x in j)),
            "correction_exact": _rate([x["corrected_exactly"] for x in mis]),
            "false_correction_rate": _rate([x["false_correction"] for x in right]),
            "valid_expansion_sets": _rate([x["expansions_valid"] for x in j]),
        }

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "intent",
            "entities",
            "misspelled",
            "corrected_query",
            "topic_keywords",
            "expansion_count",
        )
        return {k: case[k] for k in keys}


FEATURES: dict[str, Feature] = {f.name: f for f in (Feed(), Rewrite(), Replies(), Search())}
