"""The API definition itself: buf lint clean, and the generated code in step with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def test_buf_lint_clean() -> None:
    assert BUF.exists(), "buf is installed by `make install` (npm @bufbuild/buf)"
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT / "protos", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_protos() -> None:
    from genai.messaging.v1 import messaging_service_pb2 as pb

    methods = {m.name: m for m in pb.DESCRIPTOR.services_by_name["MessagingService"].methods}
    assert methods["StreamRewriteDraft"].output_type.name == "StreamRewriteDraftResponse"
    for proto in (ROOT / "protos").rglob("*.proto"):
        generated = ROOT / "shared" / proto.relative_to(ROOT / "protos").with_name(proto.stem + "_pb2.py")
        assert generated.exists(), f"{generated} missing: reinstall (make install) to regenerate"
        assert generated.stat().st_mtime >= proto.stat().st_mtime, f"{generated} older than {proto}: reinstall"
