"""genai_core.config: parsing, type and range checks, YAML loading, overrides."""

from __future__ import annotations

import pytest

from genai_core.config import (
    Config,
    ConfigError,
    EngineConfig,
    ServerConfig,
    load_config,
    parse_config,
)
from genai_services.registry import REGISTRY


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, known_services=REGISTRY.names)
    return info.value.problems


def only_problem_for(problems: list[str], key: str) -> str:
    hits = [p for p in problems if p.startswith(key + ":")]
    assert len(hits) == 1, f"expected one problem for {key}, got {problems}"
    return hits[0]


# --- defaults ---------------------------------------------------------------


@pytest.mark.parametrize("data", [{}, None, {"engine": None, "server": None}])
def test_defaults_parse(data):
    config = parse_config(data)
    assert config == Config()
    assert config.engine.tensor_parallel_size == 1
    assert config.engine.max_model_len == 8192
    assert config.server.port == 50051
    # None: every service the process knows, feed, messaging and search for `genai serve`.
    assert config.server.services is None
    assert REGISTRY.select(config.server.services) == REGISTRY.definitions
    assert REGISTRY.names == ("feed", "messaging", "search")
    assert config.engine.model_name == "SmolLM2-135M-Instruct"  # what "default" serves
    assert config.problems() == []


def test_served_model_name_wins_over_model():
    config = parse_config({"engine": {"model": "/models/x", "served_model_name": "x-prod"}})
    assert config.engine.model_name == "x-prod"


def test_valid_values_are_kept_with_int_widened_to_float():
    config = parse_config(
        {"engine": {"tensor_parallel_size": 2, "gpu_memory_utilization": 1, "dtype": "bfloat16"}}
    )
    assert config.engine.tensor_parallel_size == 2
    assert config.engine.gpu_memory_utilization == 1.0
    assert isinstance(config.engine.gpu_memory_utilization, float)
    assert config.engine.dtype == "bfloat16"


# --- unknown keys -----------------------------------------------------------


def test_unknown_key_named_with_dotted_path_and_suggestion():
    problems = problems_of({"engine": {"tensor_paralel_size": 2}})
    assert problems == [
        "engine.tensor_paralel_size: unknown key (did you mean 'tensor_parallel_size'?)"
    ]


def test_unknown_nested_key_named_with_full_path():
    problem = only_problem_for(
        problems_of({"engine": {"speculative": {"num_speculative_tokenz": 3}}}),
        "engine.speculative.num_speculative_tokenz",
    )
    assert "unknown key" in problem
    assert "num_speculative_tokens" in problem


def test_unknown_section_gets_suggestion():
    problem = only_problem_for(problems_of({"sever": {"port": 1}}), "sever")
    assert "did you mean 'server'" in problem


def test_unknown_key_without_close_match_has_no_suggestion():
    problem = only_problem_for(problems_of({"server": {"zzzzzzzz": 1}}), "server.zzzzzzzz")
    assert problem == "server.zzzzzzzz: unknown key"


# --- wrong types ------------------------------------------------------------


def test_string_for_int_is_named():
    problem = only_problem_for(
        problems_of({"engine": {"tensor_parallel_size": "2"}}), "engine.tensor_parallel_size"
    )
    assert "expected an integer" in problem
    assert "'2'" in problem


def test_bool_for_int_is_named():
    problem = only_problem_for(problems_of({"server": {"port": True}}), "server.port")
    assert "expected an integer" in problem
    assert "True" in problem


def test_bool_for_float_is_named():
    problem = only_problem_for(
        problems_of({"engine": {"gpu_memory_utilization": False}}), "engine.gpu_memory_utilization"
    )
    assert "expected a number" in problem


def test_int_for_bool_is_named():
    problem = only_problem_for(
        problems_of({"engine": {"enable_prefix_caching": 1}}), "engine.enable_prefix_caching"
    )
    assert "expected a boolean" in problem


def test_literal_lists_the_choices():
    problem = only_problem_for(problems_of({"engine": {"dtype": "fp8"}}), "engine.dtype")
    assert "one of 'auto', 'float32', 'float16', 'bfloat16'" in problem


def test_optional_field_names_both_types():
    problem = only_problem_for(
        problems_of({"engine": {"max_num_batched_tokens": "lots"}}), "engine.max_num_batched_tokens"
    )
    assert "an integer or null" in problem


def test_section_that_is_not_a_mapping():
    problem = only_problem_for(problems_of({"server": 8080}), "server")
    assert "must be a mapping" in problem


def test_top_level_not_a_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config(["engine"])  # type: ignore[arg-type]
    assert info.value.problems == ["top level: must be a mapping of sections"]


# --- ranges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"engine": {"tensor_parallel_size": 0}}, "engine.tensor_parallel_size"),
        ({"engine": {"gpu_memory_utilization": 1.5}}, "engine.gpu_memory_utilization"),
        ({"engine": {"gpu_memory_utilization": 0.01}}, "engine.gpu_memory_utilization"),
        ({"engine": {"max_model_len": 64}}, "engine.max_model_len"),
        ({"engine": {"model": "  "}}, "engine.model"),
        ({"engine": {"max_num_seqs": 8, "max_num_batched_tokens": 4}}, "engine.max_num_batched_tokens"),
        ({"engine": {"speculative": {"num_speculative_tokens": 0}}}, "engine.speculative.num_speculative_tokens"),
        (
            {"engine": {"speculative": {"prompt_lookup_min": 5, "prompt_lookup_max": 3}}},
            "engine.speculative.prompt_lookup_max",
        ),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"port": -1}}, "server.port"),
        ({"server": {"services": ["feed", "ads"]}}, "server.services"),
        ({"server": {"services": []}}, "server.services"),
        ({"server": {"services": ["feed", "feed"]}}, "server.services"),
        ({"server": {"max_message_bytes": 10}}, "server.max_message_bytes"),
        ({"metrics": {"port": 65536}}, "metrics.port"),
    ],
)
def test_out_of_range_value_is_named(data, key):
    only_problem_for(problems_of(data), key)


def test_unknown_service_name_is_named_in_the_message():
    problem = only_problem_for(problems_of({"server": {"services": "feed,ads"}}), "server.services")
    assert "ads" in problem
    assert "feed, messaging, search" in problem


def test_service_names_are_checked_only_against_the_known_services():
    assert parse_config({"server": {"services": "jobs"}}, known_services=("jobs",)).server.services == ("jobs",)
    problem = only_problem_for(
        problems_of({"server": {"services": ["feed", "jobs"]}}), "server.services"
    )
    assert "['jobs']" in problem


def test_method_priorities_default_to_the_services_own():
    assert parse_config({}).admission.method_priorities is None
    assert REGISTRY.method_priorities() == {"genai.feed.v1.FeedService/RankPosts": 10}
    given = parse_config({"admission": {"method_priorities": {"a.B/C": 3}}})
    assert given.admission.method_priorities == {"a.B/C": 3}
    only_problem_for(problems_of({"admission": {"method_priorities": {"RankPosts": 3}}}), "admission.method_priorities")


def test_range_edges_are_accepted():
    config = parse_config(
        {
            "engine": {"tensor_parallel_size": 64, "gpu_memory_utilization": 1.0},
            "server": {"port": 65535},
            "metrics": {"port": 0},
        }
    )
    assert config.server.port == 65535
    assert config.engine.gpu_memory_utilization == 1.0


# --- many problems at once ---------------------------------------------------


def test_several_range_problems_reported_at_once():
    problems = problems_of(
        {
            "engine": {"tensor_parallel_size": 0, "gpu_memory_utilization": 1.5},
            "server": {"port": 70000, "services": ["feed", "bogus"]},
        }
    )
    assert len(problems) == 4
    for key in (
        "engine.tensor_parallel_size",
        "engine.gpu_memory_utilization",
        "server.port",
        "server.services",
    ):
        only_problem_for(problems, key)


def test_several_key_and_type_problems_reported_at_once():
    problems = problems_of(
        {
            "engine": {"tensor_paralel_size": 2, "max_num_seqs": "64"},
            "server": {"port": True},
            "logging": {"level": "verbose"},
            "extra": {},
        }
    )
    assert len(problems) == 5
    for key in ("engine.tensor_paralel_size", "engine.max_num_seqs", "server.port", "logging.level", "extra"):
        only_problem_for(problems, key)


def test_config_error_message_lists_every_problem_and_source():
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"port": 70000}, "metrics": {"port": -5}}, source="prod.yaml")
    message = str(info.value)
    assert message.startswith("invalid prod.yaml:")
    assert "server.port" in message and "metrics.port" in message


# --- services as a comma string ----------------------------------------------


def test_services_comma_string_becomes_tuple():
    config = parse_config({"server": {"services": "feed,search"}})
    assert config.server.services == ("feed", "search")


def test_services_comma_string_with_spaces_and_empty_parts():
    config = parse_config({"server": {"services": " messaging , ,search "}})
    assert config.server.services == ("messaging", "search")


def test_services_list_becomes_tuple():
    config = parse_config({"server": {"services": ["search"]}})
    assert config.server.services == ("search",)


def test_services_list_of_non_strings_is_a_type_problem():
    problem = only_problem_for(problems_of({"server": {"services": [1, 2]}}), "server.services")
    assert "expected a list" in problem


# --- load_config -------------------------------------------------------------


def test_load_config_none_gives_defaults():
    assert load_config(None) == Config()


def test_load_config_reads_yaml(tmp_path):
    path = tmp_path / "genai.yaml"
    path.write_text("engine:\n  tensor_parallel_size: 2\nserver:\n  services: feed,search\n")
    config = load_config(path)
    assert config.engine.tensor_parallel_size == 2
    assert config.server.services == ("feed", "search")


def test_load_config_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert "file not found" in info.value.problems[0]
    assert str(path) in info.value.problems[0]


def test_load_config_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("engine: [unclosed\n  model: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("not valid YAML")
    assert str(path) in str(info.value)


def test_load_config_top_level_list(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- engine\n- server\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["top level: must be a mapping of sections"]


def test_load_config_names_the_file_in_problems(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("engine:\n  tensor_paralel_size: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "engine.tensor_paralel_size: unknown key (did you mean 'tensor_parallel_size'?)"
    ]
    assert str(path) in str(info.value)


def test_overrides_merge_into_sections(tmp_path):
    path = tmp_path / "genai.yaml"
    path.write_text("server:\n  host: 127.0.0.1\n  port: 9000\nengine:\n  seed: 7\n")
    config = load_config(path, {"server": {"port": 1}, "metrics": {"port": 9999}})
    assert config.server.port == 1  # overridden
    assert config.server.host == "127.0.0.1"  # kept from the file
    assert config.engine.seed == 7  # untouched section kept
    assert config.metrics.port == 9999  # section absent from the file is created


def test_overrides_without_file(tmp_path):
    config = load_config(None, {"server": {"services": "messaging"}})
    assert config.server.services == ("messaging",)
    assert config.server == ServerConfig(services=("messaging",))


def test_overrides_are_validated_like_the_file():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"server": {"port": 70000}, "engine": {"tensor_parallel_size": 0}})
    assert len(info.value.problems) == 2


def test_override_onto_empty_section(tmp_path):
    path = tmp_path / "genai.yaml"
    path.write_text("server:\n")
    assert load_config(path, {"server": {"port": 2}}).server.port == 2


def test_bug_override_onto_non_mapping_section_raises_config_error(tmp_path):
    """BUG (config.py:292 load_config, `merged = dict(data.get(section) or {})`): a YAML section
    that is not a mapping (`server: 8080`) plus any override for that section (the CLI
    always passes {"server": {...}}) crashes with TypeError instead of ConfigError."""
    path = tmp_path / "genai.yaml"
    path.write_text("server: 8080\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"server": {}})
    assert any(p.startswith("server:") for p in info.value.problems)


def test_bug_config_path_that_is_a_directory_raises_config_error(tmp_path):
    """BUG (config.py:284-285 load_config): only FileNotFoundError is caught, so a directory
    (IsADirectoryError), an unreadable file or a non-UTF-8 file escapes as a traceback."""
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_engine_config_problems_are_prefixed_by_section():
    config = Config(engine=EngineConfig(tensor_parallel_size=0))
    assert config.problems() == ["engine.tensor_parallel_size: must be 1..64"]


@pytest.mark.parametrize("size", [0, 8, 48, 512])
def test_block_size_must_be_one_vllm_supports(size):
    only_problem_for(problems_of({"engine": {"block_size": size}}), "engine.block_size")


def test_block_size_defaults_to_vllms_and_cpu_config_sets_32():
    from pathlib import Path

    assert parse_config({}).engine.block_size is None
    assert load_config(Path(__file__).parents[2] / "config" / "cpu.yaml").engine.block_size == 32
