"""The package's folders import only downward, and nothing in the product imports the simulator
except the CLI's `demo` verb. Read from the source with `ast`, function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "daemon"

# Bottom to top. A module may import its own layer's folder and any layer below it.
LAYERS: dict[str, int] = {
    "": 0,  # constants, logs, metrics, registry, token_format, values: what every layer uses
    "config": 1,
    "store": 2,
    "tradovate": 2,
    "sinks": 3,
    "refresh": 4,
    "feed": 4,  # the market-data feed: beside the refresh, both run by service
    "service": 5,
    "views": 5,
    "sim": 6,
    "cli": 7,
}
DEMO_VERB = ("cli", "cmd_demo")  # the one place the product may reach into sim/


def _layer(module: str) -> str:
    """'daemon.store.tokens' -> 'store'; 'daemon.constants' or 'daemon' -> ''."""
    parts = module.split(".")
    if module == "daemon.__main__":
        return "cli"  # `python -m daemon` is the console script
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def _imports(path: Path) -> list[tuple[str, str]]:
    """(imported daemon module, enclosing function name or '') for every import in a file."""
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.ImportFrom) and child.module:
                for alias in child.names:
                    module = child.module
                    if module == "daemon" and alias.name in ("cache", "price", "tokens"):
                        module = f"daemon.store.{alias.name}"
                    found.append((module, name))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, name) for alias in child.names)
            visit(child, name)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return [(module, fn) for module, fn in found if module.split(".")[0] == "daemon"]


def _modules() -> list[tuple[Path, str]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        modules.append((path, ".".join(relative.parts).removesuffix(".__init__")))
    return modules


def test_every_folder_is_a_known_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS) - {""}


def test_folders_import_only_downward() -> None:
    upward = []
    for path, module in _modules():
        source = _layer(module)
        if module == "daemon":
            continue  # the package's lazy re-export of the library (daemon.store)
        for imported, function in _imports(path):
            target = _layer(imported)
            if target == source:
                continue
            if (source, function) == DEMO_VERB and target == "sim":
                continue
            if LAYERS[target] >= LAYERS[source]:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_only_the_demo_verb_imports_the_simulator() -> None:
    reaching = [
        f"{module} ({function or 'module level'})"
        for path, module in _modules()
        if _layer(module) != "sim"
        for imported, function in _imports(path)
        if _layer(imported) == "sim"
    ]
    assert reaching == ["daemon.cli.run (cmd_demo)"]


def test_the_library_imports_of_readme_work() -> None:
    from daemon import cache, price, tokens

    assert callable(tokens.get_token)
    assert callable(cache.get_or_fetch)
    assert callable(price.latest)


MODULE_LINES_MAX = 400  # issue 18: a module over this has become a hub again


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path, _ in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES_MAX
    }
    assert long == {}


CLASS_LINES_MAX = 250  # issue 29: a class this long has become a hub again


def test_no_class_is_250_lines_or_more() -> None:
    """Every class of the package, the tests, the benchmarks and the tools."""
    long = {}
    for folder in ("daemon", "tests", "bench", "tools"):
        for path in sorted((PACKAGE.parent / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines >= CLASS_LINES_MAX:
                        long[f"{path.relative_to(PACKAGE.parent)}:{node.name}"] = lines
    assert long == {}


def test_daemon_and_refresher_inherit_nothing() -> None:
    for path, name in (("service/daemon.py", "Daemon"), ("refresh/refresher.py", "Refresher")):
        tree = ast.parse((PACKAGE / path).read_text(encoding="utf-8"))
        found = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
        assert found.bases == [], f"{name} carries code through a base class"


def test_the_reporter_reports_and_nothing_else() -> None:
    """The settle step's last part: it imports neither the policy, the schedule nor the keeper,
    nothing of Redis or the store, and changes no login's progress (notes included)."""
    path = PACKAGE / "refresh" / "reporter.py"
    imported = {module for module, _ in _imports(path)}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    external = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    external |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {
        "daemon.refresh.policy",
        "daemon.refresh.schedule",
        "daemon.refresh.keeper",
    }
    assert not [module for module in imported if module.startswith("daemon.store")]
    assert [name for name in external if name.split(".")[0] == "redis"] == []
    changed = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AugAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "state"
    ]
    calls = [
        f"line {node.lineno}: {ast.unparse(node.func)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("add_note", "drop_notes", "write_status", "write")
    ]
    assert (changed, calls) == ([], [])


def test_the_keeper_writes_and_decides_nothing() -> None:
    """It imports neither the policy nor the schedule: what to write, and when, is decided
    before it is called."""
    imported = {module for module, _ in _imports(PACKAGE / "refresh" / "keeper.py")}
    assert not imported & {"daemon.refresh.policy", "daemon.refresh.schedule"}


def test_only_the_settle_step_changes_a_logins_notes() -> None:
    """A note is added or dropped where an attempt's result is applied, nowhere else (the
    status adds the notes the keeper finds as it writes, but keeps none)."""
    changing = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "progress.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("add_note", "drop_notes")
        )
        or (
            isinstance(node, ast.Assign)
            and any(
                isinstance(part, ast.Attribute) and part.attr == "notes"
                for target in node.targets
                for part in ast.walk(target)
            )
        )
    )
    assert set(changing) == {"refresh/settle.py"}
