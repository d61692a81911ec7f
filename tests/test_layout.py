"""The architecture, checked: imports go one way (app -> ui -> pipeline, hub), tabs never import
each other, no module imports itself back through others, and app.py stays an entry."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "hub", "ui")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at the top or inside functions."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named.add(node.module)
            named |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in named if name in modules} - {module_name(path)}


def test_imports_go_one_way_and_tabs_stand_alone():
    modules = project_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    layer = {"app": 3, "ui": 2, "pipeline": 1, "hub": 1}
    for name, targets in graph.items():
        for target in targets:
            assert layer[target.split(".")[0]] <= layer[name.split(".")[0]], (name, target)
        tabs = {t for t in targets if t.startswith("ui.tabs.")}
        if name.startswith("ui.tabs."):
            assert not tabs, f"{name} imports another tab: {tabs}"
        elif tabs:
            assert name == "ui.shell", f"only the shell knows the tabs, not {name}"
    assert not any(t.startswith("ui") for t in graph["pipeline"] | graph["hub"])


def test_no_import_circle():
    modules = project_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*trail, name, target])}")
            if not state.get(target):
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [])


def test_app_py_is_only_the_entry():
    text = (ROOT / "app.py").read_text()
    assert len(text.splitlines()) < 120
    body = ast.parse(text).body
    defined = [n.name for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assert defined == ["make_parser", "main"]  # its flags, and the entry


def functions_of(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_long_functions_say_why():
    """No function over 100 lines; one over 60 opens with a comment saying why."""
    for name, path in project_modules().items():
        lines = path.read_text().splitlines()
        for fn in functions_of(path):
            length = fn.end_lineno - fn.lineno + 1
            assert length <= 100, f"{name}.{fn.name}: {length} lines"
            if length > 60:
                head = "\n".join(lines[fn.lineno : fn.lineno + 12])
                assert "# Over 60 lines:" in head, f"{name}.{fn.name}: {length} lines, no why"


def mentions_kind(node: ast.AST) -> bool:
    """Whether an expression reads a run's kind: a name, attribute or key called `kind`."""
    for part in ast.walk(node):
        if isinstance(part, ast.Name) and "kind" in part.id.lower():
            return True
        if isinstance(part, ast.Attribute) and "kind" in part.attr.lower():
            return True
        if isinstance(part, ast.Constant) and part.value == "kind":
            return True
    return False


def test_only_the_registry_checks_a_method_name():
    """A method's name (a recipe's KIND) is compared with, or looked up by, in
    pipeline/methods.py only: everything else asks the registry about the method."""
    from pipeline.methods import METHODS

    names = set(METHODS)
    found = []
    for name, path in project_modules().items():
        if name == "pipeline.methods":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            literals = [
                part
                for part in ast.walk(node)
                if isinstance(part, ast.Constant) and part.value in names
            ]
            if not literals:
                continue
            if isinstance(node, ast.Compare) and mentions_kind(node):
                found.append(f"{name}:{node.lineno}")
            # a table keyed by method (METHODS["dpo"], CHARTS["rl"]); a record's own keys
            # (sample["reward"]) are data, not a method
            table = node.value if isinstance(node, ast.Subscript) else None
            keyed = isinstance(table, ast.Name) and table.id.isupper()
            if keyed and isinstance(node.slice, ast.Constant) and node.slice.value in names:
                found.append(f"{name}:{node.lineno}")
    assert not found, f"a method's name checked outside pipeline/methods.py: {found}"


def test_every_module_says_what_it_is_for():
    for name, path in project_modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()) >= 2, f"{name}: no two-line docstring"
