"""The one place where search protos and search domain types meet."""

from __future__ import annotations

import re
from genai.search.v1 import search_service_pb2 as pb

from genai_core.validation import Violations
from genai_services.search.domain import EntityType, Intent, QueryUnderstanding, UnderstandQueryInput

DEFAULT_EXPANSIONS = 3
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")

INTENTS = {
    Intent.PEOPLE: pb.QUERY_INTENT_PEOPLE,
    Intent.JOBS: pb.QUERY_INTENT_JOBS,
    Intent.COMPANIES: pb.QUERY_INTENT_COMPANIES,
    Intent.CONTENT: pb.QUERY_INTENT_CONTENT,
    Intent.GROUPS: pb.QUERY_INTENT_GROUPS,
    Intent.LEARNING: pb.QUERY_INTENT_LEARNING,
}
ENTITY_TYPES = {
    EntityType.PERSON: pb.ENTITY_TYPE_PERSON,
    EntityType.COMPANY: pb.ENTITY_TYPE_COMPANY,
    EntityType.JOB_TITLE: pb.ENTITY_TYPE_JOB_TITLE,
    EntityType.SKILL: pb.ENTITY_TYPE_SKILL,
    EntityType.LOCATION: pb.ENTITY_TYPE_LOCATION,
    EntityType.SCHOOL: pb.ENTITY_TYPE_SCHOOL,
}


def understand_query_from_pb(request: pb.UnderstandQueryRequest) -> UnderstandQueryInput:
    """Raises: InvalidRequest naming every bad field."""
    v = Violations()
    query = v.text("query", request.query, max_chars=256)
    locale = v.text("locale", request.locale, max_chars=35, required=False)
    if locale and not _LOCALE.match(locale):
        v.add("locale", f"must be a BCP 47 language tag such as 'en-US', got {locale!r}")
    count = v.int_range("expansion_count", request.expansion_count, minimum=0, maximum=10)
    v.raise_if_any()
    return UnderstandQueryInput(query=query, locale=locale, expansion_count=count or DEFAULT_EXPANSIONS)


def understand_query_to_pb(u: QueryUnderstanding) -> pb.UnderstandQueryResponse:
    """The response without usage (the servicer adds it)."""
    return pb.UnderstandQueryResponse(
        intent=INTENTS[u.intent],
        entities=[
            pb.Entity(type=ENTITY_TYPES[e.type], text=e.text, start_offset_chars=e.start, end_offset_chars=e.end)
            for e in u.entities
        ],
        corrected_query=u.corrected_query,
        expanded_queries=list(u.expanded_queries),
    )
