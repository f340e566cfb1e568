from __future__ import annotations

import pytest

from genai_core.engine.admission import Admission
from genai_core.errors import DeadlineTooShort, Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_queue_full_by_requests() -> None:
    admission = Admission(max_waiting_requests=2, max_waiting_prompt_tokens=10_000)
    admission.admit(10)
    admission.admit(10)
    with pytest.raises(Overloaded) as info:
        admission.admit(10)
    assert info.value.limit == "waiting_requests"
    assert 0.1 <= info.value.retry_after_s <= 30


def test_queue_full_by_prompt_tokens_but_a_lone_big_request_is_admitted() -> None:
    admission = Admission(max_waiting_requests=10, max_waiting_prompt_tokens=100)
    admission.admit(500)  # alone in the queue: admitted whatever its size
    with pytest.raises(Overloaded) as info:
        admission.admit(1)
    assert info.value.limit == "waiting_prompt_tokens"


def test_started_and_released_tickets_free_their_place_once() -> None:
    admission = Admission(max_waiting_requests=1, max_waiting_prompt_tokens=100)
    ticket = admission.admit(40)
    assert (admission.waiting, admission.waiting_tokens) == (1, 40)
    ticket.started()
    ticket.started()
    ticket.release()
    assert (admission.waiting, admission.waiting_tokens) == (0, 0)
    admission.admit(40).release()
    assert admission.waiting == 0


def test_drain_rate_sets_retry_delay_and_rejects_hopeless_deadlines() -> None:
    clock = Clock()
    admission = Admission(max_waiting_requests=100, max_waiting_prompt_tokens=10**6, clock=clock)
    for _ in range(10):  # 10 requests leave the queue over 5 s: 2 per second
        ticket = admission.admit(1)
        clock.now += 0.5
        ticket.started()
    for _ in range(8):
        admission.admit(1)
    assert admission.drain_rate() == pytest.approx(2.0, rel=0.2)
    assert admission.expected_wait_s() == pytest.approx(4.0, rel=0.2)
    assert admission.retry_after_s() == pytest.approx(4.0, rel=0.2)
    with pytest.raises(DeadlineTooShort):
        admission.admit(1, deadline=clock.now + 1.0)
    admission.admit(1, deadline=clock.now + 60.0)


def test_retry_delay_follows_the_current_burst_not_an_earlier_one() -> None:
    clock = Clock()
    admission = Admission(max_waiting_requests=100, max_waiting_prompt_tokens=10**6, clock=clock)

    def burst(size: int, started: int, per_s: float) -> None:
        tickets = [admission.admit(1) for _ in range(size)]
        for ticket in tickets[:started]:
            clock.now += 1 / per_s
            ticket.started()

    burst(48, 48, per_s=16)  # an earlier burst, drained in 3 s
    clock.now += 20  # idle
    burst(48, 24, per_s=16)  # now: half of a new burst started, 24 still wait
    true_wait_s = 24 / 16
    # Before: the 30 s window averaged in the idle time and advised about 8 s.
    assert admission.retry_after_s() == pytest.approx(true_wait_s, rel=0.25)


def test_expired_deadline_rejected_even_on_an_empty_queue() -> None:
    clock = Clock()
    admission = Admission(max_waiting_requests=10, max_waiting_prompt_tokens=100, clock=clock)
    with pytest.raises(DeadlineTooShort):
        admission.admit(1, deadline=clock.now - 0.01)
    assert admission.waiting == 0


def test_scheduler_reports_start_tickets_the_engine_has_seen_oldest_first() -> None:
    admission = Admission(max_waiting_requests=10, max_waiting_prompt_tokens=1000)
    first, second, third = admission.admit(10), admission.admit(20), admission.admit(30)
    # The first report may predate the engine seeing them: nothing starts yet.
    admission.engine_waiting(0)
    assert (admission.waiting, admission.waiting_tokens) == (3, 60)
    late = admission.admit(40)
    # One request still waits in the scheduler: the two oldest are running.
    admission.engine_waiting(1)
    assert not first.waiting and not second.waiting and third.waiting
    assert (admission.waiting, admission.waiting_tokens) == (2, 70)
    admission.engine_waiting(0)
    assert not third.waiting and not late.waiting
    assert (admission.waiting, admission.waiting_tokens) == (0, 0)
    # Their first output after that changes nothing; release neither.
    first.started()
    late.release()
    assert (admission.waiting, admission.waiting_tokens) == (0, 0)


def test_scheduler_waiting_beyond_our_tickets_starts_none() -> None:
    admission = Admission(max_waiting_requests=10, max_waiting_prompt_tokens=1000)
    ticket = admission.admit(10)
    admission.engine_waiting(5)
    admission.engine_waiting(5)  # e.g. requests of another client of the same engine
    assert ticket.waiting
    ticket.started()  # its first output still starts it
    assert admission.waiting == 0


def test_a_ticket_started_by_its_output_leaves_the_schedulers_count_alone() -> None:
    admission = Admission(max_waiting_requests=10, max_waiting_prompt_tokens=1000)
    a, b = admission.admit(1), admission.admit(1)
    b.started()
    admission.engine_waiting(1)
    admission.engine_waiting(1)
    assert a.waiting and admission.waiting == 1
    admission.engine_waiting(0)
    assert not a.waiting and admission.waiting == 0
