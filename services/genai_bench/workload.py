"""Deterministic synthetic workloads, built as the real gRPC request protos.

Every item holds the proto a client would send and the GenerationRequest our servicer
builds from it (through the services' own `convert` and `prompts` modules), so every
target gets byte-identical prompts and the same sampling parameters and token budgets.

Lengths follow what members write: headlines of 6-14 words, 3-6 interests, posts of
25-80 words, conversations of 2-6 turns of 6-40 words, drafts of 15-70 words, search
queries of 2-7 words with an occasional typo. The same (seed, count, mix) gives the same
requests on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.messaging.v1 import messaging_service_pb2 as messaging_pb
from genai.search.v1 import search_service_pb2 as search_pb
from genai_core.engine.types import GenerationRequest

from genai_services.feed import convert as feed_convert
from genai_bench import ranking
from genai_services.messaging import convert as messaging_convert
from genai_services.messaging import prompts as messaging_prompts
from genai_services.search import convert as search_convert
from genai_services.search import prompts as search_prompts
from genai_services.registry import REGISTRY

FEATURES = ("feed", "suggest", "rewrite", "search")
"""Workload features: feed = RankPosts, suggest = SuggestReplies,
rewrite = StreamRewriteDraft (streaming), search = UnderstandQuery."""



def _method_path(service: str, method: str) -> str:
    """"/package.Service/Method" of a registered service's method (KeyError if it has none)."""
    definition = REGISTRY.by_name()[service]
    return f"/{definition.full_name}/{definition.descriptor.methods_by_name[method].name}"


METHODS = {
    "feed": _method_path("feed", "RankPosts"),
    "suggest": _method_path("messaging", "SuggestReplies"),
    "rewrite": _method_path("messaging", "StreamRewriteDraft"),
    "search": _method_path("search", "UnderstandQuery"),
}
STREAMING = frozenset({"rewrite"})

_TITLES = [
    "Senior Software Engineer",
    "Data Scientist",
    "Product Manager",
    "Engineering Manager",
    "UX Designer",
    "Machine Learning Engineer",
    "Marketing Lead",
    "Recruiter",
    "DevOps Engineer",
    "Sales Director",
    "Financial Analyst",
    "Backend Developer",
    "Nurse Practitioner",
    "Supply Chain Analyst",
    "Content Strategist",
    "Security Architect",
]
_COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Northwind",
    "Contoso",
    "Stark Logistics",
    "Wayne Analytics",
    "Hooli",
    "Vandelay Industries",
    "Pied Piper",
    "Tyrell Systems",
]
_CITIES = [
    "Berlin",
    "London",
    "Paris",
    "Amsterdam",
    "New York",
    "San Francisco",
    "Toronto",
    "Bangalore",
    "Singapore",
    "Madrid",
    "Dublin",
    "Munich",
    "Austin",
    "Sydney",
]
_SKILLS = [
    "Python",
    "Kubernetes",
    "machine learning",
    "product strategy",
    "SQL",
    "React",
    "Rust",
    "distributed systems",
    "data visualization",
    "negotiation",
    "public speaking",
    "Go",
    "cloud security",
    "A/B testing",
    "supply chain planning",
    "financial modeling",
    "Figma",
    "technical hiring",
    "LLM evaluation",
    "MLOps",
    "people management",
    "TypeScript",
]
_TOPICS = [
    "career growth",
    "remote work",
    "hiring",
    "AI",
    "leadership",
    "startups",
    "open source",
    "productivity",
    "data engineering",
    "design systems",
    "sustainability",
    "fintech",
    "healthcare",
    "cloud computing",
    "mentoring",
    "layoffs",
    "conferences",
]
_NAMES = [
    "Ana Silva",
    "Ben Okafor",
    "Chen Wei",
    "Dara Nolan",
    "Elif Kaya",
    "Farid Haddad",
    "Greta Lind",
    "Hiro Tanaka",
    "Ines Moreau",
    "Jon Berg",
    "Kavya Rao",
    "Luca Rossi",
    "Maya Cohen",
    "Nils Petersen",
    "Olu Adeyemi",
    "Priya Nair",
]
_ACTIVITIES = [
    "commented on a post about {topic}",
    "shared an article on {skill}",
    "completed a course in {skill}",
    "liked a post by {name} about {topic}",
    "started a new role as {title} at {company}",
    "attended a meetup on {topic} in {city}",
    "endorsed {name} for {skill}",
    "wrote a post on lessons learned in {topic}",
]
_POST_OPENERS = [
    "Excited to share that",
    "After five years at {company},",
    "Hot take:",
    "We are hiring!",
    "Just wrapped up a talk on {topic}.",
    "Lessons from our migration to {skill}:",
    "Quick thread on {topic}.",
    "Proud of the team at {company}:",
]
_POST_SENTENCES = [
    "we shipped a new {skill} pipeline that cut costs by {n} percent",
    "the biggest lesson was that {topic} is mostly about people, not tools",
    "if you work on {skill}, I would love to hear how you handle on-call and reviews",
    "our team in {city} is looking for a {title} who enjoys {skill}",
    "I spent the weekend reading about {topic} and took notes worth sharing",
    "the slides and a recording are linked in the comments",
    "three things I wish I knew earlier about {topic}: ask early, write things down, measure",
    "{name} gave a great overview of how {company} approaches {skill}",
    "we doubled our release frequency without adding headcount",
    "happy to mentor anyone moving into {skill} this year",
]
_MESSAGE_SENTENCES = [
    "Hi {first}, thanks for connecting!",
    "Are you open to a quick call next week?",
    "I saw your post about {topic} and had a question.",
    "We have an opening for a {title} at {company} in {city}.",
    "Would Tuesday at 3pm work for you?",
    "Could you share the slides from your talk on {skill}?",
    "I am not looking for a new role right now, but happy to stay in touch.",
    "Let me check my calendar and get back to you.",
    "The team was impressed by your experience with {skill}.",
    "Sure, I can send over my resume by Friday.",
    "Thanks again for the intro to {name}!",
    "Do you know anyone who would be a good fit for this?",
]
_DRAFT_SENTENCES = [
    "hey can u send me the report by eod",
    "i think we should move the meeting to thursday",
    "thx for the intro to {name}, really appreciate it",
    "not sure the {skill} plan is ready yet tbh",
    "we need to talk about the budget for {topic} before the offsite",
    "sorry for the late reply, been swamped with the {company} launch",
    "can we push the deadline a week, the data from {city} is late",
    "i would love to join the {topic} panel if there is still a spot",
    "pls review my pr when u get a chance, its the {skill} one",
    "great chatting today, lets keep in touch about the {title} role",
]
_QUERY_TEMPLATES = [
    "{skill} jobs in {city}",
    "{title} {company}",
    "{name}",
    "{skill} courses",
    "remote {title} roles",
    "{company} careers {city}",
    "{topic} groups",
    "people who know {skill}",
    "{title} jobs {city} remote",
    "best posts about {topic}",
    "{skill} and {skill2} engineer {city}",
]
_LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", ""]
_TONES = [
    messaging_pb.TONE_PROFESSIONAL,
    messaging_pb.TONE_FRIENDLY,
    messaging_pb.TONE_CASUAL,
    messaging_pb.TONE_CONCISE,
    messaging_pb.TONE_CONFIDENT,
]


@dataclass
class WorkItem:
    """One request of a workload: the proto and what our servicer makes of it."""

    index: int
    feature: str
    request: Any  # the request proto
    generation: GenerationRequest
    # Output length seen on the reference target (filled by the suite; used by the
    # fixed-length Hugging Face baseline).
    ref_output_tokens: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return METHODS[self.feature]

    @property
    def streaming(self) -> bool:
        return self.feature in STREAMING

    @property
    def max_length_chars(self) -> int | None:
        """The rewrite's character limit (the service stops generating there)."""
        return int(self.request.max_length_chars) if self.feature == "rewrite" else None


class _Words:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, items: Sequence[str]) -> str:
        return self.rng.choice(items)

    def fill(self, template: str) -> str:
        skill, skill2 = self.rng.sample(_SKILLS, 2)
        name = self.pick(_NAMES)
        return template.format(
            skill=skill,
            skill2=skill2,
            topic=self.pick(_TOPICS),
            name=name,
            first=name.split()[0],
            title=self.pick(_TITLES),
            company=self.pick(_COMPANIES),
            city=self.pick(_CITIES),
            n=self.rng.randint(5, 60),
        )

    def sentences(self, templates: Sequence[str], min_words: int, max_words: int) -> str:
        target = self.rng.randint(min_words, max_words)
        out: list[str] = []
        pool: list[str] = []
        while sum(len(s.split()) for s in out) < target:
            if not pool:  # each template once before any repeats
                pool = list(templates)
                self.rng.shuffle(pool)
            out.append(self.fill(pool.pop()))
        return " ".join(
            s[0].upper() + s[1:] + ("" if s.endswith(("!", "?", ".", ":")) else ".") for s in out
        )


def _typo(rng: random.Random, text: str) -> str:
    """Swap two adjacent letters of one word (a third of queries carry a typo)."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates or rng.random() > 0.33:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def make_feed(
    w: _Words, index: int, candidates: tuple[int, int] = (2, 4)
) -> feed_pb.RankPostsRequest:
    rng = w.rng
    member = feed_pb.MemberProfile(
        member_id=f"m{index:05d}",
        headline=f"{w.pick(_TITLES)} at {w.pick(_COMPANIES)} | {', '.join(rng.sample(_SKILLS, 3))} | {w.pick(_CITIES)}",
        interests=rng.sample(_SKILLS + _TOPICS, rng.randint(3, 6)),
        recent_activity=[w.fill(w.pick(_ACTIVITIES)) for _ in range(rng.randint(2, 4))],
    )
    posts = [
        feed_pb.CandidatePost(
            post_id=f"p{index:05d}-{k}",
            author=w.pick(_NAMES),
            text=w.fill(w.pick(_POST_OPENERS)) + " " + w.sentences(_POST_SENTENCES, 25, 80),
            topics=rng.sample(_TOPICS, rng.randint(1, 3)),
        )
        for k in range(rng.randint(*candidates))
    ]
    return feed_pb.RankPostsRequest(member=member, candidates=posts)


def make_suggest(w: _Words, index: int) -> messaging_pb.SuggestRepliesRequest:
    rng = w.rng
    me, other = rng.sample(_NAMES, 2)
    turns = []
    for k in range(rng.randint(2, 6)):
        from_member = k % 2 == 1
        turns.append(
            messaging_pb.ConversationTurn(
                author=me if from_member else other,
                text=w.sentences(_MESSAGE_SENTENCES, 6, 40),
                from_member=from_member,
            )
        )
    return messaging_pb.SuggestRepliesRequest(turns=turns, suggestion_count=rng.randint(2, 3))


def make_rewrite(w: _Words, index: int) -> messaging_pb.StreamRewriteDraftRequest:
    rng = w.rng
    parts = [w.fill(t) for t in rng.sample(_DRAFT_SENTENCES, rng.randint(2, 5))]
    draft = "".join(p + rng.choice([". ", ", ", " ", "! "]) for p in parts[:-1]) + parts[-1]
    return messaging_pb.StreamRewriteDraftRequest(
        draft=draft, tone=w.pick(_TONES), max_length_chars=rng.choice([160, 200, 240, 300])
    )


def make_search(w: _Words, index: int) -> search_pb.UnderstandQueryRequest:
    rng = w.rng
    query = _typo(rng, w.fill(w.pick(_QUERY_TEMPLATES)).lower())
    return search_pb.UnderstandQueryRequest(
        query=query, locale=w.pick(_LOCALES), expansion_count=rng.randint(2, 3)
    )


def generation_request(feature: str, request: Any) -> GenerationRequest:
    """What our servicer hands the engine for `request` (validation included).

    Raises:
        InvalidRequest: the proto would be refused by the service.
    """
    if feature == "feed":
        # RankPosts now scores by label probability (see bench/ranking.py for that
        # workload); the mixed workload's raw/openai/hf targets keep the old listwise
        # generation as feed's representative generation load.
        return ranking.build_listwise_request(feed_convert.rank_posts_from_pb(request))
    if feature == "suggest":
        return messaging_prompts.build_suggest_replies_request(messaging_convert.suggest_replies_from_pb(request))
    if feature == "rewrite":
        return messaging_prompts.build_rewrite_draft_request(messaging_convert.rewrite_draft_from_pb(request))
    if feature == "search":
        # UnderstandQuery runs three small generations and the readings of its entity spans
        # at once; the expansions step (the longest output) stands for it on the targets
        # that take one generation per item.
        data = search_convert.understand_query_from_pb(request)
        return search_prompts.build_understand_query_requests(data).expansions
    raise ValueError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")


_MAKERS = {
    "feed": make_feed,
    "suggest": make_suggest,
    "rewrite": make_rewrite,
    "search": make_search,
}


def parse_mix(text: str) -> dict[str, float]:
    """'feed=1,rewrite=2' or 'rewrite,search' -> weights per feature.

    Raises:
        ValueError: an unknown feature or a bad weight.
    """
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition("=")
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
        mix[name] = float(weight) if weight else 1.0
        if mix[name] <= 0:
            raise ValueError(f"weight of {name} must be > 0")
    if not mix:
        raise ValueError("the mix names no feature")
    return mix


def build_workload(
    count: int, mix: dict[str, float] | str = "feed,suggest,rewrite,search", seed: int = 0
) -> list[WorkItem]:
    """`count` requests, features drawn by weight, in a seeded order.

    Features are assigned by largest remainder (so a mix of four equal weights and a
    count of 8 gives exactly two of each), then the order is shuffled with `seed`.
    """
    weights = parse_mix(mix) if isinstance(mix, str) else dict(mix)
    total = sum(weights.values())
    exact = {f: count * w / total for f, w in weights.items()}
    counts = {f: int(v) for f, v in exact.items()}
    for f in sorted(exact, key=lambda f: (counts[f] - exact[f], FEATURES.index(f)))[
        : count - sum(counts.values())
    ]:
        counts[f] += 1
    order = [f for f in FEATURES if f in counts for _ in range(counts[f])]
    rng = random.Random(seed)
    rng.shuffle(order)
    items: list[WorkItem] = []
    for i, feature in enumerate(order):
        # One generator per item: item i is the same whatever the count or the mix.
        w = _Words(random.Random(f"{seed}:{feature}:{i}"))
        request = _MAKERS[feature](w, i)
        items.append(WorkItem(i, feature, request, generation_request(feature, request)))
    return items


def describe(items: Sequence[WorkItem]) -> dict[str, Any]:
    """Per-feature counts and prompt sizes in characters (tokens depend on the model)."""
    out: dict[str, Any] = {}
    for f in FEATURES:
        chosen = [i for i in items if i.feature == f]
        if not chosen:
            continue
        chars = sorted(sum(len(m.content) for m in i.generation.messages) for i in chosen)
        budgets = sorted(i.generation.max_output_tokens for i in chosen)
        out[f] = {
            "count": len(chosen),
            "method": METHODS[f],
            "prompt_chars_min": chars[0],
            "prompt_chars_max": chars[-1],
            "max_output_tokens_min": budgets[0],
            "max_output_tokens_max": budgets[-1],
        }
    return out
