"""A hand-written HTTP/2 gRPC client for what grpcio will not do.

grpcio always reads what it is sent, validates its own headers and answers pings
politely. A hostile or broken client does not: it stops reading (a flow-control window
of 0), resets streams mid-way, sends header bytes grpcio would refuse, or pings while
a call runs. This client speaks just enough HTTP/2 (through the `h2` package) to do
each of those on purpose.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_messages(data: bytes) -> list[bytes]:
    """Split a stream's DATA bytes into gRPC messages (whole ones only)."""
    out, i = [], 0
    while i + 5 <= len(data):
        size = struct.unpack(">I", data[i + 1 : i + 5])[0]
        if i + 5 + size > len(data):
            break
        out.append(data[i + 5 : i + 5 + size])
        i += 5 + size
    return out


@dataclass
class StreamResult:
    """What one stream received, as raw as it came."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False
    reset_code: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    @property
    def grpc_status(self) -> int | None:
        raw = self.trailers.get(b"grpc-status") or self.headers.get(b"grpc-status")
        return None if raw is None else int(raw)


class RawH2Client:
    """One HTTP/2 connection; nothing is read or acknowledged unless a method says so.

    Args:
        address: "host:port" of a plaintext (h2c) gRPC server.
        initial_window: the per-stream flow-control window this client offers; 0 means
            the server may send no DATA at all on any stream.
        auto_ack_data: give back flow-control credit for DATA received (a reading client).
    """

    def __init__(self, address: str, *, initial_window: int = 65535, auto_ack_data: bool = True) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.auto_ack_data = auto_ack_data
        self.streams: dict[int, StreamResult] = {}
        self.pings_acked = 0
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def call(
        self,
        path: str,
        message: bytes,
        *,
        metadata: list[tuple[bytes, bytes]] | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Open a unary-request call (unary or server-streaming); returns its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        if timeout_s is not None:
            headers.append((b"grpc-timeout", f"{int(timeout_s * 1000)}m".encode()))
        headers.extend(metadata or [])
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, grpc_frame(message), end_stream=True)
        self.streams[stream_id] = StreamResult()
        self._flush()
        return stream_id

    def reset(self, stream_id: int, code: int = 8) -> None:
        """RST_STREAM (default CANCEL) the stream."""
        self.conn.reset_stream(stream_id, code)
        self._flush()

    def ping(self) -> None:
        self.conn.ping(struct.pack(">Q", time.monotonic_ns()))
        self._flush()

    def pump(self, timeout_s: float) -> None:
        """Read and handle whatever arrives within `timeout_s` (returns earlier on EOF)."""
        end = time.monotonic() + timeout_s
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # e.g. frames after the server's GOAWAY: the connection is over for us.
                self.closed = True
                return
            for event in events:
                self._handle(event)
            self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams[event.stream_id].trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].data += event.data
            if self.auto_ack_data and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].reset_code = event.error_code
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings_acked += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, stream_id: int, timeout_s: float) -> StreamResult:
        """Pump until the stream ends or is reset, or `timeout_s` passes."""
        end = time.monotonic() + timeout_s
        result = self.streams[stream_id]
        while not result.done and not self.closed and time.monotonic() < end:
            self.pump(min(0.2, end - time.monotonic()))
        return result

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()
        self.closed = True
