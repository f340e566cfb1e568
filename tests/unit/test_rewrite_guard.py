"""RewriteGuard: a rewrite that copies an example answer or loops, caught while it streams."""

from __future__ import annotations

import random

from genai_services.messaging import prompts
from genai_services.messaging.domain import COPY_CHECK_CHARS, RewriteGuard

EXAMPLES = ("Hallo, könnten Sie mir bitte bis morgen den Bericht schicken?", "Hi! Could you let me know soon?")


def run(text: str, draft: str = "Hi Daniela, following up on Rotterdam.", seed: int = 0) -> tuple[str, RewriteGuard]:
    """Feed `text` in random pieces (single characters to whole words)."""
    rng = random.Random(seed)
    guard = RewriteGuard(draft, EXAMPLES)
    out, i = "", 0
    while i < len(text):
        n = rng.randint(1, 8)
        out += guard.feed(text[i : i + n])
        i += n
        if guard.copied is not None or guard.done:
            break
    return out + guard.finish(), guard


def test_ordinary_text_passes_unchanged_whatever_the_pieces() -> None:
    text = "Hello Daniela, I'd like to follow up on Rotterdam. Would June 9 work? Best, Tomasz"
    for seed in range(20):
        out, guard = run(text, seed=seed)
        assert out == text
        assert guard.copied is None and not guard.done


def test_an_example_answer_is_caught_before_anything_is_released() -> None:
    out, guard = run("Hallo, könnten Sie mir bitte bis morgen den Bericht schicken?")
    assert guard.copied == 0
    assert out == ""


def test_the_copied_example_is_named() -> None:
    out, guard = run("Hi! Could you let me know soon? Thanks")
    assert (guard.copied, out) == (1, "")


def test_an_opening_the_draft_shares_is_not_a_copy() -> None:
    draft = "hallo, könnten sie mir bitte bis morgen die Folien schicken"
    text = "Hallo, könnten Sie mir bitte bis morgen die Folien schicken?"
    out, guard = run(text, draft=draft)
    assert out == text and guard.copied is None


def test_a_short_rewrite_is_released_at_the_end() -> None:
    guard = RewriteGuard("hey", EXAMPLES)
    assert guard.feed("Hi!") == ""  # held: not yet known whether it is a copy
    assert guard.finish() == "Hi!"
    assert guard.copied is None
    assert len("Hi!") < COPY_CHECK_CHARS


def test_a_looping_rewrite_ends_before_the_first_repeat() -> None:
    text = "I'm sorry for the delay. I'm sorry for the late reply. " * 5
    for seed in range(10):
        out, guard = run(text, draft="sorry, late reply", seed=seed)
        assert guard.done
        assert out.strip() == "I'm sorry for the delay. I'm sorry for the late reply."


def test_a_sentence_that_starts_like_an_earlier_one_is_released_once_it_differs() -> None:
    guard = RewriteGuard("draft", ())
    assert guard.feed("Thanks for the call. ") == "Thanks for the call. "
    assert guard.feed("Thanks for the") == ""  # could be a repeat
    assert guard.feed(" notes.") == "Thanks for the notes."
    assert not guard.done


def test_short_repeated_sentences_are_not_a_loop() -> None:
    out, guard = run("Thanks! Great work on the launch. Thanks!", draft="thanks")
    assert out == "Thanks! Great work on the launch. Thanks!"
    assert not guard.done


def test_every_example_answer_is_long_enough_to_be_recognised() -> None:
    # A shorter one could never reach COPY_CHECK_CHARS, so its copies would pass.
    for answer in prompts.REWRITE_EXAMPLE_ANSWERS:
        assert len(" ".join(answer.split())) > COPY_CHECK_CHARS
