"""The shape of jaxsmx/: modules a reader can hold in mind.

Fast: reads the sources, runs nothing. No module over 500 lines, no function
body over 80 lines (its code, after the docstring), and no cycle among the
imports made at module level.
"""

from __future__ import annotations

import ast
import pathlib

import jaxsmx

ROOT = pathlib.Path(jaxsmx.__file__).resolve().parent
MAX_MODULE, MAX_BODY = 500, 80
SOURCES = sorted(ROOT.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """The jaxsmx modules that ``path`` imports at module level."""
  out = set()
  for node in ast.parse(path.read_text(encoding="utf-8")).body:
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxsmx"):
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        is_module = (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
        out.add(sub if is_module else node.module or "")
    elif isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("jaxsmx")}
  return out


def _cycles(graph: dict[str, set[str]]) -> list[str]:
  def reach(start):
    seen, todo = set(), [start]
    while todo:
      for dep in graph.get(todo.pop(), ()):
        if dep not in seen:
          seen.add(dep)
          todo.append(dep)
    return seen

  return [m for m in graph if m in reach(m)]


def test_no_module_over_500_lines():
  long = {_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 500}
  assert not long, long


def test_no_function_body_over_80_lines():
  long = []
  for path in SOURCES:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        code = node.body[1:] if ast.get_docstring(node) else node.body
        body = node.end_lineno - code[0].lineno + 1 if code else 0
        if body > MAX_BODY:
          long.append(f"{_name(path)}.{node.name} ({body} lines)")
  assert not long, long


def test_no_import_cycle():
  graph = {_name(p): _imports(p) for p in SOURCES}
  # the package __init__ files re-export their modules: they are not edges back
  assert not _cycles(graph), _cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c"]


def _is_jit(node: ast.expr) -> bool:
  """``jax.jit`` or ``functools.partial(jax.jit, ...)``."""
  if isinstance(node, ast.Call):
    func = node.func
    is_partial = isinstance(func, ast.Attribute) and func.attr == "partial"
    return is_partial and bool(node.args) and _is_jit(node.args[0])
  return ast.unparse(node) == "jax.jit"


def _naming_problems(source: str) -> list[str]:
  """Where ``source`` breaks the entry names of docs/internals.md."""
  out = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.FunctionDef):
      if node.name.endswith("_checked"):
        out.append(f"{node.name}: name a checkify variant _f_checkify")
      if any(_is_jit(d) for d in node.decorator_list):
        out.append(f"{node.name}: jit by assignment, _f_jit = jax.jit(_f_prepared)")
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
      if not _is_jit(node.value.func) or not node.value.args:
        continue
      (target,), inner = node.targets, ast.unparse(node.value.args[0])
      want = inner.removesuffix("_prepared") + "_jit"
      if ast.unparse(target) != want or not inner.endswith(("_prepared", "_checkify")):
        out.append(f"{ast.unparse(target)} = jax.jit({inner}): name it {want}")
  return out


def test_one_name_for_each_part_of_an_entry():
  problems = [
    f"{_name(p)}: {w}"
    for p in SOURCES
    for w in _naming_problems(p.read_text(encoding="utf-8"))
  ]
  assert not problems, problems


def test_the_naming_check_sees_a_decorator_and_a_checked_name():
  bad = (
    "@functools.partial(jax.jit, static_argnums=(1,))\n"
    "def _f_checked(x, axis):\n  return x\n"
    "_g = jax.jit(_g_prepared)\n"
    "_h_checkify_jit = jax.jit(_h_checkify)\n"
    "_k_jit = jax.jit(_k_prepared, static_argnums=(0,))\n"
  )
  problems = _naming_problems(bad)
  assert len(problems) == 3, problems
  assert "_f_checkify" in problems[0] and "jit by assignment" in problems[1]
  assert "name it _g_jit" in problems[2]


def _unshared(trees: dict[str, ast.Module], exported: set[str]) -> list[str]:
  """Module-level functions named without an underscore that are neither
  exported nor imported by another module: ``module.name`` each."""
  imported = set()  # `from .m import name` and `m.name`
  for tree in trees.values():
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        imported |= {alias.name for alias in node.names}
      elif isinstance(node, ast.Attribute):
        imported.add(node.attr)
  return [
    f"{module}.{node.name}"
    for module, tree in trees.items()
    for node in tree.body
    if isinstance(node, ast.FunctionDef)
    and not node.name.startswith("_")
    and node.name not in exported | imported
  ]


def test_a_name_without_an_underscore_is_exported_or_shared():
  # inside a private module, a plain name says "used elsewhere": the public
  # API (jaxsmx.__all__) or a helper another module imports
  trees = {_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in SOURCES}
  unshared = _unshared(trees, set(jaxsmx.__all__))
  assert not unshared, f"{unshared}: prefix a module-local helper with _"


def test_the_sharing_check_sees_a_local_helper():
  trees = {
    "local": ast.parse("def helper(x):\n  return x\n\n\ndef _fine(x):\n  return x\n"),
    "user": ast.parse("import local\n\n\ndef api(x):\n  return local._fine(x)\n"),
  }
  assert _unshared(trees, {"api"}) == ["local.helper"]
