"""A minimal asyncio HTTP/1.1 client for loopback benchmarking.

Only what the benchmark needs: a POST whose response is read line by line (server-sent
events, chunked or not) and a GET of a whole body (health, Prometheus metrics). One
connection per request, like most naive clients; no dependency beyond the standard
library, so it runs unchanged wherever vLLM's server runs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body[:300]}")


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


async def _open(
    url: str, method: str, body: bytes | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    host, port, path = _split(url)
    reader, writer = await asyncio.open_connection(host, port, limit=2**22)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", "Accept: */*"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError(f"{url}: connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return reader, writer, status, headers


async def _body_chunks(
    reader: asyncio.StreamReader, headers: dict[str, str]
) -> AsyncIterator[bytes]:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while data := await reader.read(65536):
            yield data


async def get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET `url`; returns (status, body text)."""

    async def _do() -> tuple[int, str]:
        reader, writer, status, headers = await _open(url, "GET", None)
        try:
            body = b"".join([c async for c in _body_chunks(reader, headers)])
        finally:
            writer.close()
        return status, body.decode(errors="replace")

    return await asyncio.wait_for(_do(), timeout)


async def post_sse(url: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """POST JSON and yield each server-sent event's JSON until `data: [DONE]`; a plain
    JSON answer (a request with `"stream": false`) is yielded whole, as one event.

    Closing the generator early closes the connection, which makes vLLM's server
    abort the request (as a client that stops reading would).

    Raises:
        HttpError: a non-2xx status.
    """
    reader, writer, status, headers = await _open(url, "POST", json.dumps(payload).encode())
    try:
        if status >= 300:
            body = b"".join([c async for c in _body_chunks(reader, headers)])
            raise HttpError(status, body.decode(errors="replace"))
        if headers.get("content-type", "").startswith("application/json"):
            yield json.loads(b"".join([c async for c in _body_chunks(reader, headers)]))
            return
        buffer = b""
        async for chunk in _body_chunks(reader, headers):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)
    finally:
        writer.close()


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum every sample of each metric name over its labels: {name: total}.

    Histogram buckets are also kept per bound, summed over the other labels, as
    `name{le="BOUND"}` (e.g. how many GC pauses took at most 20 ms).
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        bucket = None
        if "{" in line:
            name, rest = line[: line.index("{")], line[line.rindex("}") + 1 :].split()
            le = re.search(r'le="([^"]*)"', line[line.index("{") : line.rindex("}")])
            if name.endswith("_bucket") and le is not None:
                bucket = f'{name}{{le="{le.group(1)}"}}'
        else:
            name, *rest = line.split()
        try:
            value = float(rest[0])
        except (ValueError, IndexError):
            continue
        out[name] = out.get(name, 0.0) + value
        if bucket is not None:
            out[bucket] = out.get(bucket, 0.0) + value
    return out
