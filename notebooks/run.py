"""Execute the notebooks top to bottom, each in a fresh Jupyter kernel, as a reader would with "Run all".

    python notebooks/run.py [NOTEBOOK ...]      # default: every notebooks/*.ipynb

A notebook fails when a cell raises, or when it was committed with outputs (stale outputs show a reader results
the code no longer gives; clear them with `jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`). The
executed copy is not written back. Each notebook's wall time is printed: the notebooks are written to finish within
two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent


def stale_cells(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of code cells that carry outputs or an execution count."""
    return [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def run(path: Path, timeout: int) -> str | None:
    """Execute one notebook in its own folder; the failure as text, or None."""
    notebook = nbformat.read(path, as_version=4)
    if stale := stale_cells(notebook):
        return f"code cells {stale} were committed with outputs; clear them (see this script's docstring)"
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": HERE}})
    try:
        client.execute()
    except CellExecutionError as error:
        return str(error)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run before it fails")
    args = parser.parse_args()
    failed = []
    for path in args.notebooks or sorted(HERE.glob("*.ipynb")):
        start = time.perf_counter()
        error = run(path, args.timeout)
        print(f"{'FAILED' if error else 'ok'}  {path.name}  {time.perf_counter() - start:.0f} s", flush=True)
        if error:
            print(error, file=sys.stderr)
            failed.append(path.name)
    if failed:
        sys.exit(f"{len(failed)} notebook(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
