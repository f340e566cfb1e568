"""What "good enough" means: the issue's bars, and the gates CI enforces today.

BARS are the targets of issue 17 (test split, default model, temperature 0). GATES are
what CI fails on: the measured values of the current prompts minus a small margin, so a
change that makes answers worse fails CI while the bars are still being worked towards.
Raise a gate when tuning lands; never lower one to make a change pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    metric: str  # "<feature>.<metric>" as in the report's JSON
    op: str  # ">=" or "<="
    value: float
    label: str

    def passes(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


def _t(metric: str, op: str, value: float, label: str) -> Threshold:
    return Threshold(metric, op, value, label)


BARS: tuple[Threshold, ...] = (
    _t("rewrite.scaffold_free", ">=", 1.0, "free of prompt scaffolding"),
    _t("rewrite.within_limit", ">=", 1.0, "within the length limit"),
    _t("rewrite.meaning_kept", ">=", 0.80, "meaning kept (key terms of the draft present)"),
    _t("replies.valid_sets", ">=", 0.90, "valid sets (count, distinct, complete, no echo)"),
    _t("search.intent_accuracy", ">=", 0.70, "intent accuracy"),
    _t(
        "search.false_correction_rate", "<=", 0.10, "false corrections on correctly spelled queries"
    ),
    _t("search.correction_exact", ">=", 0.50, "misspelled queries corrected exactly"),
    _t("search.entity_recall", ">=", 0.60, "entity recall (type + span)"),
    _t("search.valid_expansion_sets", ">=", 0.80, "valid expansion sets"),
    _t("feed.ndcg_at_3", ">=", 0.80, "NDCG@3"),
    _t("all.error_calls", "<=", 0, "calls ending in an error status"),
)

# The test split after tuning (docs/quality.md), minus about two cases (0.08 of a rate
# over 22-27 cases; 2 of 6 misspelled queries; 0.05 of feed's NDCG@3), because batched CPU
# decoding is not bitwise repeatable between runs. within_limit is the service's own
# guarantee (its length limiter), so it gates at 1; a gate never asks more than its bar
# (false corrections, intent, expansions gate at the bar).
GATES: tuple[Threshold, ...] = (
    _t("rewrite.scaffold_free", ">=", 0.95, "free of prompt scaffolding"),
    _t("rewrite.within_limit", ">=", 1.0, "within the length limit"),
    _t("rewrite.meaning_kept", ">=", 0.73, "meaning kept (key terms of the draft present)"),
    # 22 of 22 on both splits with the continued list (messaging-v3); three cases of margin,
    # as a short list now takes a second, batched round of generations.
    _t("replies.valid_sets", ">=", 0.86, "valid sets (count, distinct, complete, no echo)"),
    _t("search.intent_accuracy", ">=", 0.70, "intent accuracy"),
    _t(
        "search.false_correction_rate", "<=", 0.10, "false corrections on correctly spelled queries"
    ),
    _t("search.correction_exact", ">=", 0.16, "misspelled queries corrected exactly"),
    # 0.619 on test (search-understand-v5: no job title or skill begins or ends with a
    # name); 0.571 with v4, 0.524 with v3's span readings, 0.238 with v2.
    _t("search.entity_recall", ">=", 0.57, "entity recall (type + span)"),
    _t("search.valid_expansion_sets", ">=", 0.80, "valid expansion sets"),
    # 0.845 on test with audience prediction (feed-rank-v3); scores are single prefills,
    # so less run-to-run drift than decoding, but the same margin.
    _t("feed.ndcg_at_3", ">=", 0.79, "NDCG@3"),
    _t("all.error_calls", "<=", 0, "calls ending in an error status"),
)


def verdicts(
    results: dict[str, float], thresholds: tuple[Threshold, ...]
) -> list[tuple[Threshold, float | None, bool]]:
    """Each threshold with its measured value and whether it passes.

    A metric the run did not measure (its feature left out) is reported with None and
    counts as passing, so `--features` can run one feature at a time.
    """
    out = []
    for t in thresholds:
        value = results.get(t.metric)
        out.append((t, value, value is None or t.passes(value)))
    return out
