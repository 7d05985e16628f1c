"""The layers of derivations/: the engine, the JAX agreement, the derivations.

Fast: reads the sources and imports the modules, runs no check.
"""

from __future__ import annotations

import ast
import pathlib
import sys
import types

import derivations
from derivations import engine

ROOT = pathlib.Path(derivations.__file__).resolve().parent
MAX_BODY = 80


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """The derivations modules ``path`` imports (relative imports, resolved)."""
  name = _module_name(path)
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.ImportFrom) and node.level:
      base = package.split(".")[: len(package.split(".")) - node.level + 1]
      target = ".".join(base + ([node.module] if node.module else []))
      for alias in node.names:
        sub = ROOT.parent / pathlib.Path(*f"{target}.{alias.name}".split("."))
        is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
        out.add(f"{target}.{alias.name}" if is_module else target)
  return out


GRAPH = {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_no_import_cycle():
  def reach(start):
    seen, todo = set(), [start]
    while todo:
      for dep in GRAPH.get(todo.pop(), ()):
        if dep not in seen:
          seen.add(dep)
          todo.append(dep)
    return seen

  cycles = [m for m in GRAPH if m in reach(m)]
  assert not cycles, cycles


def test_the_engine_imports_only_itself_and_sympy():
  for path in (ROOT / "engine").glob("*.py"):
    assert all(d.startswith("derivations.engine") for d in _imports(path)), path
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level:
        names = [node.module or ""]
      else:
        continue
      assert not any(m.split(".")[0] in ("jax", "jaxsmx") for m in names), path


def test_the_agreement_never_imports_a_derivation():
  for path in (ROOT / "agreement").glob("*.py"):
    for dep in _imports(path):
      assert dep.startswith(("derivations.engine", "derivations.agreement")), (
        path,
        dep,
      )


def test_no_function_body_over_80_lines_in_the_engine():
  long = []
  for path in (ROOT / "engine").glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        body = node.end_lineno - node.body[0].lineno + 1
        if body > MAX_BODY:
          long.append(f"{path.name}:{node.name} ({body} lines)")
  assert not long, long


def test_every_registered_module_has_derivations():
  for module in derivations.modules():
    assert callable(module.derivations), module.__name__
    assert module.derivations(), module.__name__
  keys = [d.key for d in derivations.all_derivations()]
  assert len(keys) == len(set(keys))


def test_a_module_is_added_by_one_line(monkeypatch):
  """A new module: its name in MODULES; its steps' checks and cases follow."""
  from derivations.agreement.numeric import LOGITS, Numeric, by_jacrev

  d = engine.Derivation(
    key="example",
    title="Example",
    functions=("softmax",),
    intro="",
    ctx=engine.Context({}),
    steps=(
      engine.Step(
        "",
        engine.eq(engine.a[engine.i], engine.a[engine.i]),
        name="step",
        agrees=(
          Numeric(
            "Jacobian",
            "softmax",
            (engine.i, engine.j),
            ((engine.z, LOGITS),),
            by_jacrev(),
            "jax.jacrev",
          ),
        ),
      ),
    ),
    headline=engine.eq(engine.a[engine.i], engine.a[engine.i]),
  )
  module = types.ModuleType("derivations._example")
  module.derivations = lambda: (d,)  # type: ignore[attr-defined]
  module.cases = lambda by_key: ["a case of " + by_key["example"].key]  # type: ignore[attr-defined]
  monkeypatch.setitem(sys.modules, "derivations._example", module)
  monkeypatch.setattr(derivations, "MODULES", (*derivations.MODULES, "_example"))
  assert derivations.all_derivations()[-1] is d
  (check,) = [c for c in derivations.numeric_checks() if c.key == "example"]
  assert check.step == "step" and check.name == "example/step/Jacobian"
  assert derivations.cases()[-1] == "a case of example"
