"""Build hook: generate the gRPC Python code from protos/ before packaging.

Generated code is a build product (never committed, never edited): every install,
editable or not, regenerates it into shared/genai so `import genai.feed.v1` works.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).parent.resolve()
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "shared"


def generate() -> None:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(protos))
    # Regular packages (not namespace ones) so setuptools and mypy see them.
    for d in (OUT / "genai").rglob("*"):
        if d.is_dir():
            (d / "__init__.py").touch()
    (OUT / "genai" / "__init__.py").touch()
    (OUT / "genai" / "py.typed").touch()


generate()

packages = (
    ["genai", *(f"genai.{p}" for p in find_namespace_packages(OUT / "genai"))]
    + ["genai_core", *(f"genai_core.{p}" for p in find_namespace_packages(OUT / "genai_core"))]
    + [
        name
        for top in ("genai_services", "genai_bench", "genai_testing")
        for name in (top, *(f"{top}.{p}" for p in find_namespace_packages(ROOT / "services" / top)))
    ]
    + ["genai_eval", *(f"genai_eval.{p}" for p in find_namespace_packages(ROOT / "services" / "genai_eval"))]
)
setup(packages=[p for p in packages if "__pycache__" not in p])
