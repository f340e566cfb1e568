"""The schema check behind generate_json: cached per distinct schema, still strict."""

from __future__ import annotations

import jsonschema
import pytest

from genai_core.engine.base import _validator, validate_json


def _schema(count: int) -> dict:
    return {
        "type": "object",
        "properties": {"replies": {"type": "array", "items": {"type": "string"}, "minItems": count}},
        "required": ["replies"],
        "additionalProperties": False,
    }


def test_equal_schemas_share_one_validator() -> None:
    _validator.cache_clear()
    validate_json({"replies": ["a", "b"]}, _schema(2))
    # A separately built but equal schema (keys in another order) reuses the validator.
    validate_json({"replies": ["c", "d"]}, dict(reversed(list(_schema(2).items()))))
    info = _validator.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    validate_json({"replies": ["e", "f", "g"]}, _schema(3))
    assert _validator.cache_info().misses == 2


@pytest.mark.parametrize(
    "value", [{"replies": ["only one"]}, {"replies": [1, 2]}, {"replies": ["a", "b"], "extra": 1}, []]
)
def test_values_off_the_schema_are_rejected(value: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_json(value, _schema(2))


def test_an_invalid_schema_fails_loudly() -> None:
    with pytest.raises(jsonschema.SchemaError):
        validate_json({}, {"type": "no-such-type"})
