"""Import layering: genai_core knows nothing of the services, the benchmark or the test support;
the product never imports the benchmark or the test support; services never import the host;
nothing outside genai_core reads its private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from genai_services.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "shared" / "genai_core"
SERVICES = ROOT / "services" / "genai_services"
BENCH = ROOT / "services" / "genai_bench"
TESTING = ROOT / "services" / "genai_testing"
EVAL = ROOT / "services" / "genai_eval"
FEATURES = REGISTRY.names  # each registered service's folder has the same name
# The one product module allowed to import the benchmark and the evaluation, inside a
# function only, so `genai bench` / `genai eval` work while `genai serve` never loads them.
BENCH_ENTRY = SERVICES / "host" / "cli.py"
TOOLS = ("genai_bench", "genai_eval")


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


def top_level_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Like `imported_modules`, but only what the module imports when it is loaded (not in functions)."""
    tree = ast.parse(source)
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    top = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in nested]
    return imported_modules(ast.unparse(ast.Module(body=top, type_ignores=[])), module, is_package)


def top_level_imports_of(path: Path) -> set[str]:
    return top_level_imports(path.read_text(), module_name(path), path.name == "__init__.py")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_of_core() -> set[str]:
    """Private names genai_core defines: module-level functions, classes, constants, and
    `self._x` attributes and methods of its classes."""
    names: set[str] = set()
    for path in python_files(CORE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return {n for n in names if is_private(n)}


def private_core_uses(source: str, private: set[str]) -> list[str]:
    """`from genai_core... import _x` and `obj._x` (obj not self/cls) for `_x` in `private`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and within(node.module or "", "genai_core"):
            found += [f"import {alias.name}" for alias in node.names if alias.name in private]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f".{node.attr}")
    return found


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


def test_top_level_import_reader_skips_function_bodies():
    source = "import a\nif X:\n    from b import c\ndef f():\n    import genai_bench.cli\n"
    assert "genai_bench.cli" in imported_modules(source, "genai_services.host.x")
    assert top_level_imports(source, "genai_services.host.x") == {"a", "b", "b.c"}


def test_private_use_reader_finds_reaches_into_the_core():
    private = {"_llm", "_FALLBACK_TEMPLATE"}
    source = (
        "from genai_core.engine.vllm_engine import _FALLBACK_TEMPLATE\n"
        "x = engine._llm\n"
        "y = self._llm\n"
    )
    assert private_core_uses(source, private) == ["import _FALLBACK_TEMPLATE", "._llm"]


def test_layout_is_where_the_test_expects_it():
    assert len(python_files(CORE)) >= 5
    assert (BENCH / "cli.py").is_file() and (TESTING / "procs.py").is_file()
    assert {"_llm", "_FALLBACK_TEMPLATE", "_record_queue_time"} <= private_names_of_core()
    for feature in FEATURES:
        assert (SERVICES / feature / "convert.py").is_file()
    assert (SERVICES / "host").is_dir()


# --- the rules -------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["genai_services", "genai_bench", "genai_testing", "genai_eval"])
def test_genai_core_never_imports_what_builds_on_it(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imports_of(path) if within(m, package))
        for path in python_files(CORE)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


@pytest.mark.parametrize("package", ["genai_bench", "genai_eval", "genai_testing"])
def test_the_product_never_imports_the_tools_or_test_support(package):
    offenders = {}
    for path in python_files(SERVICES):
        # `genai bench` / `genai eval` may load their package, lazily, when asked to.
        allowed_lazily = path == BENCH_ENTRY and package in TOOLS
        found = top_level_imports_of(path) if allowed_lazily else imports_of(path)
        offenders[str(path.relative_to(ROOT))] = sorted(m for m in found if within(m, package))
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


@pytest.mark.parametrize("package", TOOLS)
def test_the_entry_point_still_reaches_the_tools(package):
    # Keeps the exception above honest: it names the file that really does the hand-off.
    assert any(within(m, package) for m in imports_of(BENCH_ENTRY))


def test_test_support_never_imports_the_benchmark():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imports_of(path) if within(m, "genai_bench"))
        for path in python_files(TESTING)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_nothing_outside_the_core_reads_its_private_names():
    private = private_names_of_core()
    offenders = {
        str(path.relative_to(ROOT)): private_core_uses(path.read_text(), private)
        for package in (SERVICES, BENCH, TESTING, EVAL)
        for path in python_files(package)
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
