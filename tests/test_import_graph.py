"""The package's import graph: no circle, and the layers import only downwards (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_models"
FAMILIES = ("lit_models.classification", "lit_models.segmentation", "lit_models.detection", "lit_models.sequence")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, in functions too, except those under ``if TYPE_CHECKING:`` (never run)."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Each lit_models module -> the lit_models modules it imports."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in modules}
            elif node.module and node.module.startswith("lit_models"):
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
                targets |= submodules or {node.module}
        graph[name] = targets - {name}
    return graph


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        for target in graph.get(pending.pop(), ()):
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def test_no_import_circle():
    graph = import_graph()
    # The package's __init__ re-exports lazily (imports nothing at run time), so it is no shortcut.
    circles = sorted(name for name in graph if name in reaches(graph, name))
    assert circles == [], f"modules that import themselves through others: {circles}"


def test_writers_and_sequence_family_import_no_embedded_data_or_other_family():
    graph = import_graph()
    for writer in ("lit_models.writers", "lit_models.drawing", "lit_models.predictions"):
        bad = {m for m in reaches(graph, writer) if m.startswith(("lit_models.datamodules.sources", *FAMILIES))}
        assert bad == set(), f"{writer} imports {sorted(bad)}"
    for name in (m for m in graph if m.startswith("lit_models.sequence")):
        others = (*FAMILIES[:3], "lit_models.datamodules.sources", "lit_models.nets.backbones")
        bad = {m for m in reaches(graph, name) if m.startswith(others)}
        assert bad == set(), f"{name} imports {sorted(bad)}"


def test_nets_and_datamodules_import_no_training_code():
    graph = import_graph()
    for name in graph:
        if name.startswith(("lit_models.nets", "lit_models.datamodules")):
            bad = {m for m in reaches(graph, name) if m.startswith((*FAMILIES, "lit_models.task", "lit_models.cli"))}
            assert bad == set(), f"{name} imports {sorted(bad)}"


def source_trees() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}


def test_nothing_outside_the_data_modules_reads_their_hyperparameters():
    """The data describes itself once (DataSpec): outside lit_models/datamodules, no ``<data>.hparams`` (of anything
    named like a DataModule: ``datamodule``, ``data``, ``cli.datamodule``), and no ``getattr(..., "hparams")``."""
    found = []
    for name, tree in source_trees().items():
        if name.startswith("lit_models.datamodules"):
            continue
        for node in ast.walk(tree):
            reads = isinstance(node, ast.Attribute) and node.attr in ("hparams", "hparams_initial")
            if reads and "data" in ast.unparse(node.value):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
            looks_up = isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr")
            if looks_up and any(isinstance(arg, ast.Constant) and arg.value == "hparams" for arg in node.args[1:2]):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_no_code_outside_a_family_switches_on_or_imports_it():
    """A family declares hooks (use_data, check_data, export_graph, set_generation, show, ...): no isinstance on a
    family's class, and no import of a family, outside it. The registry names them as strings; the CLI imports
    them all through it."""
    from lit_models import registry

    families = {**registry.MODELS, **registry.FAMILY_BASES}
    found = []
    for name, tree in source_trees().items():
        if name.startswith("lit_models.nets"):  # plain torch: its VGG is the network, not the module
            continue
        own = next((family for family in FAMILIES if name == family or name.startswith(f"{family}.")), None)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance" and len(node.args) == 2:
                classes = {leaf.id for leaf in ast.walk(node.args[1]) if isinstance(leaf, ast.Name)}
                foreign = {c for c in classes & families.keys() if families[c] != own}
                found += [f"{name}:{node.lineno} isinstance(..., {c})" for c in sorted(foreign)]
        for node in runtime_imports(tree):
            targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for target in targets:
                family = next((f for f in FAMILIES if target == f or target.startswith(f"{f}.")), None)
                if family is not None and family != own:
                    found.append(f"{name}:{node.lineno} imports {target}")
    assert found == []
