"""Import layering: genai_core knows nothing of the services; services never import the host."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from genai_services.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "shared" / "genai_core"
SERVICES = ROOT / "services" / "genai_services"
FEATURES = REGISTRY.names  # each registered service's folder has the same name


def module_name(path: Path) -> str:
    """Dotted module name of a file under shared/ or services/."""
    base = CORE.parent if CORE in path.parents else SERVICES.parent
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports, absolute, including `from pkg import sub` as pkg.sub."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")


# --- the import reader itself ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import genai_services.feed", "genai_core.x", "genai_services.feed"),
        ("from genai_services import host", "genai_services.feed.servicer", "genai_services.host"),
        ("from genai_services.host.server import serve", "genai_services.feed.x", "genai_services.host.server"),
        ("from ..host import server", "genai_services.feed.servicer", "genai_services.host.server"),
        ("from .. import host", "genai_services.search.convert", "genai_services.host"),
        ("def f():\n    import genai_services\n", "genai_core.engine.base", "genai_services"),
        ("if TYPE_CHECKING:\n    from genai_services.common import X\n", "genai_core.models", "genai_services.common"),
    ],
)
def test_import_reader_finds_imports(source, module, expected):
    assert expected in imported_modules(source, module)


def test_import_reader_resolves_relative_imports_in_packages():
    found = imported_modules("from .domain import Tone", "genai_services.messaging", is_package=True)
    assert "genai_services.messaging.domain" in found


def test_layout_is_where_the_test_expects_it():
    assert len(python_files(CORE)) >= 5
    for feature in FEATURES:
        assert (SERVICES / feature / "convert.py").is_file()
    assert (SERVICES / "host").is_dir()


# --- the rules -------------------------------------------------------------------------


def test_genai_core_never_imports_genai_services():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imports_of(path) if within(m, "genai_services"))
        for path in python_files(CORE)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


@pytest.mark.parametrize("feature", FEATURES)
def test_feature_services_never_import_the_host(feature):
    files = python_files(SERVICES / feature)
    assert files
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imports_of(path) if within(m, "genai_services.host"))
        for path in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


@pytest.mark.parametrize("feature", FEATURES)
def test_feature_services_never_import_each_other(feature):
    others = [f for f in FEATURES if f != feature]
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imports_of(path) for o in others if within(m, f"genai_services.{o}")
        )
        for path in python_files(SERVICES / feature)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("layer", ["domain", "prompts"])
def test_domain_and_prompts_stay_free_of_grpc_and_protos(feature, layer):
    path = SERVICES / feature / f"{layer}.py"
    bad = sorted(m for m in imports_of(path) if within(m, "grpc") or within(m, "genai"))
    assert bad == []
