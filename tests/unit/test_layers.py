"""The layers of ``openai_routes`` and the one direction of their imports, read from the source (no import runs).

endpoints -> pipeline -> protocol -> core; server -> core; store -> core; playground -> server -> core; only the app
factory (``openai_routes/app.py``) imports the endpoints and the playground; an endpoint package never imports
another one; nothing imports vLLM; and no module imports itself through a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "openai_routes"

ALLOWED = {
    "core": {"core"},
    "protocol": {"core", "protocol"},
    "store": {"core", "store"},
    "pipeline": {"core", "protocol", "pipeline"},
    "server": {"core", "server"},
    "endpoints": {"core", "protocol", "pipeline", "server", "store", "endpoints"},
    "playground": {"core", "server", "playground"},
    "app": {"core", "protocol", "pipeline", "server", "store", "endpoints", "playground"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module of ours)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")
            )
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def endpoint(module: str) -> str | None:
    """The endpoint package a module belongs to (``None`` for the shared modules at ``endpoints/``'s root)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "endpoints" else None


def test_the_layers_are_what_the_tree_holds() -> None:
    assert {layer(module) for module in MODULES} <= {*ALLOWED, "package"}


def violations(module: str, names: set[str]) -> list[str]:
    """What ``module`` imports against the rule."""
    ours = {name for name in names if name.startswith("openai_routes.")}
    wrong = [f"{name} (layer {layer(name)})" for name in ours if layer(name) not in ALLOWED.get(layer(module), set())]
    if layer(module) == "endpoints":
        wrong += [
            f"{name} (another endpoint)"
            for name in ours
            if layer(name) == "endpoints" and endpoint(name) not in (None, endpoint(module))
        ]
    return sorted(wrong + [name for name in names if name == "vllm" or name.startswith("vllm.")])


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle in ``graph`` (module -> the modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for name in sorted(graph[module]):
            if name == module or name.startswith(module + "."):  # a package importing its own modules
                continue
            if state.get(name) == 1:
                return [*path[path.index(name) :], name]
            if name not in state and (found := visit(name)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module: str) -> None:
    assert not violations(module, MODULES[module])


def test_no_import_circle() -> None:
    graph = {module: {name for name in names if name in MODULES} for module, names in MODULES.items()}
    assert circle(graph) is None


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A pipeline module importing the server layer, an endpoint importing another, vLLM, and the old circle
    (access -> metrics -> registry -> errors -> access) are all found."""
    source = tmp_path / "bad.py"
    source.write_text("from openai_routes.server.sse import sse_response\nimport vllm\n")
    assert violations("openai_routes.pipeline.bad", imports(source)) == [
        "openai_routes.server.sse (layer server)",
        "vllm",
    ]
    other = {"openai_routes.endpoints.chat_completions.router"}
    assert violations("openai_routes.endpoints.responses.router", other) == [
        "openai_routes.endpoints.chat_completions.router (another endpoint)"
    ]
    old = {"access": {"metrics"}, "metrics": {"registry"}, "registry": {"errors"}, "errors": {"access"}}
    assert circle(old) == ["access", "metrics", "registry", "errors", "access"]
