"""Executes every notebook in notebooks/, so that none of them can rot.

Each notebook is run top to bottom in a fresh kernel on a temporary copy; the
committed file is never rewritten by the test. A cell that raises (an
``assert`` included) fails the test.

To re-execute the notebooks and save their outputs in place, for committing:

    .venv/bin/python tests/test_notebooks.py                 # every notebook
    .venv/bin/python tests/test_notebooks.py notebooks/01_*.ipynb

The kernel is always the Python running this file (the venv's), whatever
``python3`` kernelspec Jupyter would otherwise find on the machine, so the
notebooks see the same jaxsmx, jax and optax as the rest of the test suite.
Dependencies: the ``notebooks`` extra in pyproject.toml.
"""

from __future__ import annotations

import pathlib
import resource
import shutil
import sys
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
TIMEOUT_S = 600  # per cell


class _ThisPython(KernelSpecManager):
  """Resolves every kernel name to an ipykernel on ``sys.executable``."""

  def get_kernel_spec(self, kernel_name, *args, **kwargs):
    return KernelSpec(
      argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      display_name="Python 3 (ipykernel)",
      language="python",
      name="python3",
    )


def execute(path: pathlib.Path, workdir: pathlib.Path) -> nbformat.NotebookNode:
  """Runs the notebook at `path` with `workdir` as its working directory."""
  nb = nbformat.read(path, as_version=4)
  km = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisPython())
  client = NotebookClient(
    nb,
    km=km,
    timeout=TIMEOUT_S,
    kernel_name="python3",
    resources={"metadata": {"path": str(workdir)}},
  )
  try:
    client.execute()
  finally:  # nbclient leaves a kernel it did not create running
    if km.has_kernel:
      km.shutdown_kernel(now=True)
  return nb


# the notebooks that take 20 to 40 s each (their own derivations, a training
# run, a large vocabulary) run in the full tier, which CI runs too; make test
# executes the others
LONG = {"02_derivations", "03_training_a_classifier", "04_large_vocabulary"}


@pytest.mark.slow
@pytest.mark.parametrize(
  "path",
  [pytest.param(p, marks=[pytest.mark.full] if p.stem in LONG else []) for p in PATHS],
  ids=[p.stem for p in PATHS],
)
def test_notebook_executes(path, tmp_path):
  # A temporary copy next to the repository layout the notebooks expect:
  # they run from notebooks/ and may import derivations/ from the root.
  copy = tmp_path / path.name
  shutil.copy(path, copy)
  nb = execute(copy, workdir=NOTEBOOKS)
  errors = [
    out
    for cell in nb.cells
    if cell.cell_type == "code"
    for out in cell.get("outputs", [])
    if out.get("output_type") == "error"
  ]
  assert not errors, errors


def test_there_are_notebooks():
  assert PATHS, f"no notebooks found in {NOTEBOOKS}"


def _main(argv: list[str]) -> None:
  paths = [pathlib.Path(a).resolve() for a in argv] or PATHS
  for path in paths:
    start = time.perf_counter()
    cpu_start = _children_cpu_s()
    nb = execute(path, workdir=path.parent)
    nbformat.write(nb, path)
    seconds = time.perf_counter() - start
    cpu = _children_cpu_s() - cpu_start
    size_kb = path.stat().st_size / 1024
    print(f"{path.name}: {seconds:.1f} s wall, {cpu:.1f} s CPU, {size_kb:.0f} KB")


def _children_cpu_s() -> float:
  """CPU seconds of finished child processes (the kernels), user + system."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
  _main(sys.argv[1:])
