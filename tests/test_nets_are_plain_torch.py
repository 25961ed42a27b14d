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


def test_the_registry_is_the_one_list_of_names():
    """lit_models.registry lists every class users name: each resolves from the package, and the modules listed are
    exactly the concrete subclasses of the family bases (a new architecture cannot be forgotten)."""
    import inspect

    import lit_models
    from lit_models import registry

    assert all(getattr(lit_models, name).__name__ == name for name in lit_models.__all__)
    registry.import_all()

    def concrete(cls):
        for sub in cls.__subclasses__():
            if not inspect.isabstract(sub) and sub.__module__.startswith("lit_models"):
                yield sub
            yield from concrete(sub)

    found = {sub.__name__ for base in registry.FAMILY_BASES for sub in concrete(registry.lookup(base))}
    found -= {"RecurrentModule"}  # RNN, LSTM and GRU's shared constructor, no architecture of its own
    assert found == set(registry.MODELS)
