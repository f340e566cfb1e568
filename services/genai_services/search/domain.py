"""Search query understanding's domain types."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Intent(enum.Enum):
    PEOPLE = "people"
    JOBS = "jobs"
    COMPANIES = "companies"
    CONTENT = "content"
    GROUPS = "groups"
    LEARNING = "learning"


class EntityType(enum.Enum):
    PERSON = "person"
    COMPANY = "company"
    JOB_TITLE = "job_title"
    SKILL = "skill"
    LOCATION = "location"
    SCHOOL = "school"


@dataclass(frozen=True)
class UnderstandQueryInput:
    query: str
    locale: str
    expansion_count: int


@dataclass(frozen=True)
class Entity:
    type: EntityType
    text: str
    start: int  # code points into the query
    end: int  # exclusive


@dataclass(frozen=True)
class QueryUnderstanding:
    intent: Intent
    entities: tuple[Entity, ...]
    corrected_query: str | None
    expanded_queries: tuple[str, ...]
