"""The quality gate: `genai eval` on the default model over the test split, as CI runs it.

Starts `genai serve` on SmolLM2-135M-Instruct (converted on first use, as `make serve`
does), runs every feature's test split, and fails on each metric below its gate in
genai_eval.bars.GATES. The full report stays in the test's temp folder (report.md,
dump.md) for reading a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from genai_eval.bars import GATES

pytestmark = pytest.mark.quality

ROOT = Path(__file__).resolve().parents[2]


def test_test_split_meets_every_gate(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genai_services.host.cli",
            "eval",
            "--model",
            "default",
            "--config",
            str(ROOT / "config" / "cpu.yaml"),
            "--split",
            "test",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=850,  # under pytest-timeout's 900 s, so a hang fails here with the log
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    gates = json.loads((out / "results.json").read_text())["splits"]["test"]["gates"]
    assert [g["metric"] for g in gates] == [t.metric for t in GATES]
    failed = [
        f"{g['metric']} = {g['value']} (gate {g['op']} {g['threshold']})"
        for g in gates
        if not g["pass"]
    ]
    assert not failed, f"below the quality gate: {failed}; report in {out / 'report.md'}"
