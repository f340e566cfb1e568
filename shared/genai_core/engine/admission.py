"""Admission control: a bounded queue in front of the engine.

vLLM queues without limit; past a point that only adds latency and memory. Requests
admitted here but not yet running in the engine are "waiting"; their number and prompt
tokens are capped. The drain rate (requests leaving the queue per second) estimates
how long a newcomer would wait: it sets RetryInfo's delay and rejects calls whose
deadline would pass before they start.

When a request "starts": whichever comes first of
- the engine's scheduler says so (`engine_waiting`, fed every engine step from vLLM's
  scheduler stats): vLLM reports how many requests wait, not which, so of the tickets
  the engine has surely seen, the oldest beyond that count leave the queue (admission
  order; priorities can reorder the engine's queue, but only the count and the
  tokens matter here);
- its first output (`Ticket.started`).
The first output alone is not enough: a request that asks only for its final output
(unary calls) produces none until it has finished.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable

from genai_core.errors import DeadlineTooShort, Overloaded

# Short: the drain rate that matters is the current one. Over a long window, the idle
# time since an earlier burst counts as slow draining, and RetryInfo advised 4-7 s for
# bursts that cleared in 2-4 s.
_RATE_WINDOW_S = 5.0


class Ticket:
    """One admitted request's place in the queue."""

    def __init__(self, admission: Admission, prompt_tokens: int) -> None:
        self._admission = admission
        self.prompt_tokens = prompt_tokens
        self.admitted_at = admission.clock()
        # How many scheduler reports had arrived when it was admitted.
        self.report_index = admission._reports
        self.waiting = True

    def started(self) -> float:
        """It produced output: leave the queue (if still in it); returns seconds since admission."""
        if self.waiting:
            self._admission._leave(self, started=True)
        return self._admission.clock() - self.admitted_at

    def release(self) -> None:
        """The request ended (or was aborted) without starting; idempotent."""
        if self.waiting:
            self._admission._leave(self, started=False)


class Admission:
    def __init__(
        self,
        max_waiting_requests: int,
        max_waiting_prompt_tokens: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_waiting_requests = max_waiting_requests
        self.max_waiting_prompt_tokens = max_waiting_prompt_tokens
        self.clock = clock
        self.waiting = 0
        self.waiting_tokens = 0
        self._starts: collections.deque[float] = collections.deque()
        # Waiting tickets in admission order (dict: ordered, O(1) removal).
        self._queue: dict[Ticket, None] = {}
        # Tickets admitted before this many scheduler reports ago are known to the engine.
        self._reports = 0

    def drain_rate(self) -> float | None:
        """Requests leaving the queue per second over the last window; None if unknown."""
        now = self.clock()
        while self._starts and now - self._starts[0] > _RATE_WINDOW_S:
            self._starts.popleft()
        if len(self._starts) < 2:
            return None
        span = max(now - self._starts[0], 1e-3)
        return len(self._starts) / span

    def expected_wait_s(self) -> float:
        rate = self.drain_rate()
        return 0.0 if rate is None or self.waiting == 0 else self.waiting / rate

    def retry_after_s(self) -> float:
        # At least a tenth of a second, at most 30 s: clients back off, not give up.
        return min(max(self.expected_wait_s(), 0.1), 30.0)

    def admit(self, prompt_tokens: int, deadline: float | None = None) -> Ticket:
        """Take a place in the queue, or refuse.

        Args:
            prompt_tokens: the request's prompt length.
            deadline: when the caller stops waiting, on `clock`'s time line.
        Raises:
            Overloaded: the queue is full (requests or prompt tokens).
            DeadlineTooShort: the deadline passes before the queue would let it start.
        """
        return self.admit_many([prompt_tokens], deadline)[0]

    def admit_many(self, prompt_tokens: list[int], deadline: float | None = None) -> list[Ticket]:
        """Admit a call of several engine requests (e.g. a scoring call) all or none.

        Each request is counted as one waiting request with its own prompt tokens, so
        a call of 500 candidates weighs 500 requests, not one. A call bigger than the
        limits is admitted into an empty queue only (otherwise it could never run).

        Args:
            prompt_tokens: each request's prompt length.
            deadline: when the caller stops waiting, on `clock`'s time line.
        Raises:
            Overloaded: the queue is too full for all of them (requests or tokens).
            DeadlineTooShort: the deadline passes before the queue would let them start.
        """
        count, tokens = len(prompt_tokens), sum(prompt_tokens)
        if self.waiting and self.waiting + count > self.max_waiting_requests:
            raise Overloaded("waiting_requests", self.waiting, self.max_waiting_requests, self.retry_after_s())
        if self.waiting and self.waiting_tokens + tokens > self.max_waiting_prompt_tokens:
            raise Overloaded(
                "waiting_prompt_tokens", self.waiting_tokens, self.max_waiting_prompt_tokens, self.retry_after_s()
            )
        if deadline is not None:
            remaining, expected = deadline - self.clock(), self.expected_wait_s()
            if remaining <= expected or remaining <= 0:
                raise DeadlineTooShort(max(remaining, 0.0), expected)
        self.waiting += count
        self.waiting_tokens += tokens
        tickets = [Ticket(self, n) for n in prompt_tokens]
        for ticket in tickets:
            self._queue[ticket] = None
        return tickets

    def engine_waiting(self, waiting: int) -> None:
        """The engine's scheduler reports `waiting` requests not yet running.

        Tickets admitted before the previous report have reached the scheduler (a
        request admitted just before this report may still be on its way to it, so it
        is neither counted nor started here). Of those, all but the newest `waiting`
        have started. Called every engine step, on the event loop.
        """
        self._reports += 1
        # Admission order is report order, so the known tickets are the queue's head.
        known = list(itertools.takewhile(lambda t: t.report_index < self._reports - 1, self._queue))
        for ticket in known[: max(0, len(known) - max(0, waiting))]:
            self._leave(ticket, started=True)

    def _leave(self, ticket: Ticket, started: bool) -> None:
        ticket.waiting = False
        self._queue.pop(ticket, None)
        self.waiting -= 1
        self.waiting_tokens -= ticket.prompt_tokens
        if started:
            self._starts.append(self.clock())
