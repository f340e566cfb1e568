"""The labelled data sets shipped with the package, one JSONL file per feature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
FEATURES = ("feed", "rewrite", "replies", "search")
SPLITS = ("dev", "test")


def load_cases(feature: str, splits: tuple[str, ...] = SPLITS) -> list[dict[str, Any]]:
    """The cases of one feature in the given splits, in file order.

    Args:
        feature: One of FEATURES.
        splits: Which splits to keep.

    Returns:
        Cases as dicts, each with at least `id` and `split`.

    Raises:
        ValueError: an unknown feature or split, or a case without a known split.
    """
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; expected one of {', '.join(FEATURES)}")
    if unknown := set(splits) - set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected dev or test")
    cases = []
    path = DATA_DIR / f"{feature}.jsonl"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        case = json.loads(line)
        if case.get("split") not in SPLITS:
            raise ValueError(
                f"{path.name}:{n}: split must be dev or test, got {case.get('split')!r}"
            )
        if case["split"] in splits:
            cases.append(case)
    return cases
