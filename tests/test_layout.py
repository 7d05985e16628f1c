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
