"""The schema check behind generate_json, and the services' response schemas it trusts."""

from __future__ import annotations

import jsonschema
import pytest

from genai_core.engine.base import validate_json
from genai_services.feed import prompts as feed_prompts
from genai_bench import ranking as listwise
from genai_services.search import prompts as search_prompts
from genai_services.search.domain import UnderstandQueryInput


def _schema(count: int) -> dict:
    return {
        "type": "object",
        "properties": {"replies": {"type": "array", "items": {"type": "string"}, "minItems": count}},
        "required": ["replies"],
        "additionalProperties": False,
    }


def test_a_value_on_the_schema_passes() -> None:
    validate_json({"replies": ["a", "b"]}, _schema(2))


@pytest.mark.parametrize(
    "value", [{"replies": ["only one"]}, {"replies": [1, 2]}, {"replies": ["a", "b"], "extra": 1}, []]
)
def test_values_off_the_schema_are_rejected(value: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_json(value, _schema(2))


# validate_json skips the metaschema check at run time, so every schema the services
# can build is checked here, at the edges of what their request validation admits.
@pytest.mark.parametrize(
    "schema",
    [feed_prompts.REASON_SCHEMA]
    + [listwise.response_schema(n) for n in range(1, listwise.LISTWISE_MAX_CANDIDATES + 1)]
    + [
        r.json_schema
        for q in ("j", "java jobs", "q" * 256, " ".join(["ab"] * 85))
        for n in (1, 3, 10)
        for built in [search_prompts.build_understand_query_requests(UnderstandQueryInput(q, "", n))]
        for r in (built.intent, built.correction, built.expansions)
    ],
)
def test_service_schemas_are_valid_json_schemas(schema: dict) -> None:
    jsonschema.validators.validator_for(schema).check_schema(schema)
