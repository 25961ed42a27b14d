"""docs/architecture.md, rule 1: anyone can import the nets without Lightning."""

import ast
import subprocess
import sys
from pathlib import Path

NETS = Path(__file__).resolve().parents[1] / "lit_models" / "nets"


def test_no_lightning_import_statements():
    for path in NETS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("lightning", "pytorch_lightning", "torchmetrics"), (
                    path,
                    name,
                )


def test_importing_every_net_loads_no_lightning():
    modules = [f"lit_models.nets.{p.stem}" for p in NETS.glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_static_exports_are_the_lazy_ones():
    """Editors and type checkers read the TYPE_CHECKING imports; the package serves _EXPORTS: the same names, from
    the same modules, and each resolves."""
    import lit_models

    source = Path(lit_models.__file__).read_text()
    block = next(node for node in ast.parse(source).body if isinstance(node, ast.If))  # if TYPE_CHECKING:
    static = {alias.name: node.module for node in block.body for alias in node.names}
    assert static == lit_models._EXPORTS
    assert all(getattr(lit_models, name).__name__ == name for name in lit_models.__all__)
