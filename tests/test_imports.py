"""The runtime package's modules import each other without cycles, counting the imports made
inside functions (a cycle broken by a late import is still a cycle in the design)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("kravia_sync", "connectors")
ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module and the modules of ours it imports anywhere in its text."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for imported in _imported(node, package):
                # `from a import b` may name module a.b, or something a defines.
                target = imported
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target not in PACKAGES:
                    targets.add(target)
        graph[name] = targets
    return graph


def _imported(node: ast.AST, package: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the package, up level - 1
            parts = package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        yield from (f"{base}.{alias.name}" for alias in node.names)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph(_modules())
    assert len(graph) > 50  # the whole runtime was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_late_import(tmp_path: Path) -> None:
    """The check above can fail: two modules importing each other, one of them inside a
    function, and a relative import, are found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from .a import other\n")
    (package / "c.py").write_text("import pkg.a\n")
    modules = {f"pkg.{n}": package / f"{n}.py" for n in ("a", "b", "c")}
    assert import_graph(modules) == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert cycles(import_graph(modules)) == [["pkg.a", "pkg.b"]]


# --- the layers ---------------------------------------------------------------------------
# Lowest first. A module imports only from its own layer or the ones below; two groups on
# one level (the client and the connectors) do not import each other. `kravia_sync.testing` (the test doubles and the conformance kit) is used by
# nothing in the runtime, except the two commands that run a simulator on purpose.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kravia_sync",),  # the model, the lifecycle, payments, the connector API, the settings
    ("kravia_sync.kravia", "connectors"),
    ("kravia_sync.state",),
    ("kravia_sync.engine",),
    ("kravia_sync.service",),  # the daemon: schedules, health, metrics, webhooks
    ("kravia_sync.cli",),  # the command line runs passes and the daemon
)
# What Kravia's API looks like, as named constants: the settings read the default base URL
# from it, so it belongs with the bottom layer although it sits beside the client.
BOTTOM_EXTRAS = ("kravia_sync.kravia.assumptions",)
TESTING = "kravia_sync.testing"
# `kravia-sync demo` and `kravia-sync simulate` start the bundled simulator (the [simulator]
# extra), importing it inside the command.
MAY_USE_TESTING = ("kravia_sync.cli.setup", "kravia_sync.cli.demo")


def _group(module: str) -> str:
    """The longest layer group that `module` belongs to (a module of the package itself, such
    as `kravia_sync.model`, belongs to `kravia_sync`)."""
    if module in BOTTOM_EXTRAS or module == "kravia_sync.__main__":
        return "kravia_sync"
    if module == TESTING or module.startswith(TESTING + "."):
        return TESTING
    groups = [group for layer in LAYERS for group in layer]
    matching = [g for g in groups if module == g or module.startswith(g + ".")]
    longest = max(matching, key=len)
    if longest == "kravia_sync" and module.count(".") > 1:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS")
    return longest


def _level(group: str) -> int:
    return next(level for level, layer in enumerate(LAYERS) if group in layer)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        source = _group(module)
        for target in sorted(targets):
            wanted = _group(target)
            if wanted == TESTING:
                if source != TESTING and module not in MAY_USE_TESTING:
                    found.append(f"{module} imports the test double {target}")
                continue
            if source in {TESTING, wanted}:
                continue
            if module == "kravia_sync.__main__":
                continue  # `python -m kravia_sync` runs the command line
            if _level(wanted) >= _level(source):
                found.append(f"{module} ({source}) imports {target} ({wanted}), not below it")
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    graph = import_graph(_modules())
    assert layer_violations(graph) == []


def test_the_layer_check_finds_an_import_upwards_and_a_test_double() -> None:
    """The check above can fail: the state store importing the engine, the client importing a
    connector, and the engine importing the simulator, are each found."""
    graph = {
        "kravia_sync.state.store": {"kravia_sync.engine.driver", "kravia_sync.model"},
        "kravia_sync.kravia.client": {"connectors.sql"},
        "kravia_sync.engine.driver": {"kravia_sync.testing.simulator", "kravia_sync.state.store"},
        "kravia_sync.cli.demo": {"kravia_sync.testing.simulator"},
    }
    assert layer_violations(graph) == [
        "kravia_sync.engine.driver imports the test double kravia_sync.testing.simulator",
        (
            "kravia_sync.kravia.client (kravia_sync.kravia) imports connectors.sql (connectors), "
            "not below it"
        ),
        (
            "kravia_sync.state.store (kravia_sync.state) imports kravia_sync.engine.driver "
            "(kravia_sync.engine), not below it"
        ),
    ]


def test_built_in_connectors_use_only_the_public_connector_api() -> None:
    """The connectors shipped with kravia-sync import from kravia-sync only what a third-party
    connector can: the names `kravia_sync` exports (not its modules)."""
    reaching_in = []
    for path in sorted((ROOT / "connectors").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            reaching_in.extend(
                f"{path.relative_to(ROOT)}:{node.lineno} imports {module}"
                for module in modules
                if module.startswith("kravia_sync.")
            )
    assert reaching_in == []
