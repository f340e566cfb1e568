"""Hostile and unusual clients against the real server (issue 16).

Each test does what one bad client did to a replica; `conftest.promises` then checks
the server kept its promises (alive, SERVING, engine idle, no INTERNAL, bounded memory).
What grpcio will not do (stop reading, reset mid-stream, send raw header bytes, ping
at will) goes through the hand-written HTTP/2 client in tests/rawh2.py.
"""

from __future__ import annotations

import time

import grpc
import pytest
from adversarial_limits import MAX_REQUEST_TIME_S, STALL_TIMEOUT_S
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from genai_testing.procs import ServerProcess
from rawh2 import RawH2Client, grpc_messages

from genai_core.grpc_runtime import status as grpc_status

pytestmark = [pytest.mark.adversarial, pytest.mark.engine]

STREAM = "/genai.messaging.v1.MessagingService/StreamRewriteDraft"
UNARY = "/genai.messaging.v1.MessagingService/RewriteDraft"
HEALTH_POLL_S = 2  # genai_services.host.server.HEALTH_POLL_S
REWRITE = dict(
    draft="hey, can we move our call to next week? something came up on my side, sorry about that",
    tone=msg_pb.TONE_PROFESSIONAL,
    max_length_chars=2000,
)


def test_a_stream_nobody_reads_is_cut_and_does_not_kill_the_process(server: ServerProcess) -> None:
    # Flow-control window 0, no deadline. Before the fix the stall watchdog took the
    # waiting stream for a stalled engine and the process exited 1 after
    # ~STALL_TIMEOUT_S + HEALTH_POLL_S; the call itself never ended.
    client = RawH2Client(server.address, initial_window=0)
    try:
        started = time.monotonic()
        client.call(STREAM, msg_pb.StreamRewriteDraftRequest(**REWRITE).SerializeToString())
        # Past both the watchdog's limit and the call's maximum time.
        end = started + max(STALL_TIMEOUT_S + 2 * HEALTH_POLL_S, MAX_REQUEST_TIME_S) + 3
        while time.monotonic() < end and server.process.poll() is None:
            client.pump(0.5)
        assert server.process.poll() is None, f"server exited:\n{server.log()[-3000:]}"
        # The server gave up on the call at max_request_time_s (its generation aborted,
        # its place freed): a client that does not read can be sent no status.
        assert '"event": "client_not_reading"' in server.log()
    finally:
        client.close()


def test_a_stalled_stream_with_a_deadline_ends_by_it(server: ServerProcess) -> None:
    client = RawH2Client(server.address, initial_window=0)
    try:
        stream = client.call(STREAM, msg_pb.StreamRewriteDraftRequest(**REWRITE).SerializeToString(), timeout_s=2)
        result = client.wait(stream, 2 + 5)
        assert result.done, "the call outlived its deadline"
        assert result.grpc_status in (None, grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    finally:
        client.close()


def test_reset_mid_stream_frees_the_engine(server: ServerProcess) -> None:
    client = RawH2Client(server.address)
    resets = 0
    try:
        # Reset at different points of the call: before the server has read the request,
        # while it is queued or generating (the tiny model's streams end within a second,
        # and the first message may come only at the end: the length limiter holds text
        # back until a word boundary).
        for wait_s in (0.0, 0.02, 0.05, 0.1, 0.2):
            stream = client.call(STREAM, msg_pb.StreamRewriteDraftRequest(**REWRITE).SerializeToString(), timeout_s=30)
            result = client.streams[stream]
            client.pump(wait_s)
            if not result.done:
                client.reset(stream)
                resets += 1
        client.pump(0.5)
    finally:
        client.close()
    assert resets >= 2  # at least the earliest resets came before the call could end


@pytest.mark.parametrize(
    "given",
    [b"id\twith-tab", b"id\x7fdel", "caf\u00e9".encode(), b"\xff\xfe", b"a\r\nx-evil: 1", b"x" * 300],
    ids=["tab", "del", "non-ascii", "raw-bytes", "crlf", "too-long"],
)
def test_a_bad_request_id_never_fails_a_finished_call(server: ServerProcess, given: bytes) -> None:
    # Before: echoed into the x-request-id trailer, refused by grpc after the work: INTERNAL.
    client = RawH2Client(server.address)
    try:
        request = msg_pb.RewriteDraftRequest(**{**REWRITE, "max_length_chars": 100}).SerializeToString()
        stream = client.call(UNARY, request, metadata=[(b"x-request-id", given)], timeout_s=30)
        result = client.wait(stream, 30)
    finally:
        client.close()
    assert result.grpc_status == 0, result
    assert len(grpc_messages(result.data)) == 1
    assert result.trailers[b"x-request-id"] != given


def test_post_ids_come_back_exactly_as_given(server: ServerProcess) -> None:
    given = ["post-1  ", "a", "a "]
    request = feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(member_id="m 1 ", headline="Data engineer", interests=["spark"]),
        candidates=[feed_pb.CandidatePost(post_id=p, author="Ann", text=f"post about spark {i}") for i, p in
                    enumerate(given)],
    )
    with grpc.insecure_channel(server.address) as channel:
        response = feed_grpc.FeedServiceStub(channel).RankPosts(request, timeout=60)
    assert sorted(p.post_id for p in response.ranked_posts) == sorted(given)


def test_a_maximal_bad_request_gets_invalid_argument_through_a_default_client(server: ServerProcess) -> None:
    long_id = "dup-" * 2500
    request = feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(member_id=long_id, headline=" ", interests=[" "] * 20, recent_activity=[""] * 10),
        candidates=[feed_pb.CandidatePost(post_id=long_id, author="", text="", topics=[""] * 10)] * 20,
    )
    with grpc.insecure_channel(server.address) as channel:  # grpc's default metadata limits
        with pytest.raises(grpc.RpcError) as caught:
            feed_grpc.FeedServiceStub(channel).RankPosts(request, timeout=30)
    error = caught.value
    # Before: RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" (212 KB).
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(bad.DESCRIPTOR))
    assert 0 < len(bad.field_violations) <= grpc_status.MAX_FIELD_VIOLATIONS


def test_keepalive_pings_during_calls_are_tolerated(server: ServerProcess) -> None:
    # Bare PINGs far faster than grpc's default policy allows (2 early pings, then
    # GOAWAY too_many_pings), during calls and between them.
    client = RawH2Client(server.address)
    try:
        for _ in range(3):
            stream = client.call(UNARY, msg_pb.RewriteDraftRequest(**REWRITE).SerializeToString(), timeout_s=60)
            result = client.streams[stream]
            while not result.done and not client.closed:
                client.ping()
                client.pump(0.2)
            assert result.grpc_status == 0, result
        for _ in range(5):
            client.ping()
            client.pump(0.2)
    finally:
        client.close()
    assert client.goaway is None, client.goaway
    assert client.pings_acked > 5
