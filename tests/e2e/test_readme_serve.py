"""As a user would: the README's serve command on the default model, called with grpcurl.

`make serve` (README command 1) in its own process group, health polled over gRPC,
every RPC called with grpcurl through server reflection, then SIGTERM to the group:
the server must drain and exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from genai_testing.procs import ServerProcess, engine_env, free_port

from genai_services.registry import REGISTRY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("e2e")
    port, metrics_port = free_port(), free_port()
    log_path = tmp / "server.log"
    env = engine_env(tmp)
    env.pop("MAKEFLAGS", None)
    process = subprocess.Popen(
        ["make", "-s", "serve", f"ARGS=--host 127.0.0.1 --port {port} --metrics-port {metrics_port}"],
        cwd=ROOT,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, as a container's would be
    )
    server = ServerProcess(process, log_path, port, metrics_port)
    try:
        # First start converts the default model (~30 s) before vLLM loads it (~25 s).
        server.wait_serving(timeout_s=600)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def grpcurl(server: ServerProcess, *args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "300", *args], capture_output=True, text=True, timeout=320
    )
    assert result.returncode == 0, f"grpcurl {args} failed: {result.stderr}"
    return result.stdout


def call(server: ServerProcess, method: str, body: dict[str, object]) -> dict[str, object]:
    """One RPC through grpcurl; its JSON uses the proto's own (snake_case) field names."""
    return json.loads(grpcurl(server, "-d", json.dumps(body), server.address, method))


def test_list_shows_services_health_and_reflection(readme_server: ServerProcess) -> None:
    listed = set(grpcurl(readme_server, readme_server.address, "list").split())
    assert {
        *REGISTRY.full_names,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed


def test_each_rpc_answers(readme_server: ServerProcess) -> None:
    ranked = call(
        readme_server,
        "genai.feed.v1.FeedService/RankPosts",
        {
            "member": {"member_id": "m1", "headline": "Backend engineer", "interests": ["python", "distributed systems"]},
            "candidates": [
                {"post_id": "a", "author": "Ann", "text": "Five lessons from scaling our Python services to 1M rps"},
                {"post_id": "b", "author": "Bob", "text": "Photos from our team's summer barbecue"},
            ],
            "explain_top_k": 1,
        },
    )
    assert sorted(p["post_id"] for p in ranked["ranked_posts"]) == ["a", "b"]
    # A reason for the top one only, as asked (grpcurl omits empty strings).
    assert [bool(p.get("reason")) for p in ranked["ranked_posts"]] == [True, False]

    replies = call(
        readme_server,
        "genai.messaging.v1.MessagingService/SuggestReplies",
        {"turns": [{"author": "Recruiter", "text": "Are you open to new roles in data engineering?"}], "suggestion_count": 2},
    )
    # At most the count asked: the service drops unusable replies instead of padding (proto docs).
    assert 1 <= len(replies["suggestions"]) <= 2

    rewrite = call(
        readme_server,
        "genai.messaging.v1.MessagingService/RewriteDraft",
        {"draft": "hey can u send me the q3 report asap", "tone": "TONE_PROFESSIONAL", "max_length_chars": 200},
    )
    assert 0 < len(rewrite["text"]) <= 200

    streamed = grpcurl(
        readme_server,
        "-d",
        json.dumps({"draft": "thx for the intro, lets meet", "tone": "TONE_FRIENDLY", "max_length_chars": 120}),
        readme_server.address,
        "genai.messaging.v1.MessagingService/StreamRewriteDraft",
    )
    assert streamed.count('"usage"') == 1  # grpcurl prints one JSON object per message

    understood = call(
        readme_server,
        "genai.search.v1.SearchService/UnderstandQuery",
        {"query": "machine lerning jobs in london", "expansion_count": 2},
    )
    assert understood["intent"].startswith("QUERY_INTENT_") and understood["intent"] != "QUERY_INTENT_UNSPECIFIED"


def test_bad_request_details_visible_in_grpcurl(readme_server: ServerProcess) -> None:
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-d", '{"query": ""}', readme_server.address, "genai.search.v1.SearchService/UnderstandQuery"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "query" in result.stderr


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_sigterm_drains_and_exits_zero(readme_server: ServerProcess) -> None:
    assert readme_server.health() == health_pb2.HealthCheckResponse.SERVING
    # SIGTERM goes to `genai` itself, as an orchestrator sends it to a container's
    # main process; make then exits with genai's status.
    (genai,) = children(readme_server.process.pid)
    started = time.monotonic()
    os.kill(genai, signal.SIGTERM)
    code = readme_server.process.wait(timeout=90)
    assert code == 0, readme_server.log()[-3000:]
    assert '"event": "stopped"' in readme_server.log()
    assert time.monotonic() - started < 90
