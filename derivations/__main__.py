r"""``python -m derivations``: re-derive, check, and write the report.

Exits 0 when every symbolic step, numeric comparison and worked example
passes, 1 otherwise, 2 for ``--check`` when the written report would differ
from the one on disk.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT = {"markdown": HERE / "REPORT.md", "latex": HERE / "REPORT.tex"}


def render(report, fmt: str) -> str:
  from derivations import report as rep

  return rep.render_latex(report) if fmt == "latex" else rep.render_markdown(report)


def main(
  argv: Sequence[str] | None = None,
  *,
  derivations=None,
  checks=None,
  fns: Mapping[str, Callable] | None = None,
) -> int:
  """The command line, callable with injected derivations (for tests).

  Args:
    argv: command-line arguments (default ``sys.argv[1:]``).
    derivations: replaces the full list of derivations.
    checks: replaces the numeric checks.
    fns: replaces jaxsmx functions by name.

  Returns:
    The exit status.
  """
  parser = argparse.ArgumentParser(
    prog="python -m derivations",
    description="Re-derive every jaxsmx gradient with SymPy, check it "
    "against jaxsmx numerically and write the derivation report.",
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    help="where to write (default derivations/REPORT.md or .tex)",
  )
  parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
  parser.add_argument(
    "--check",
    action="store_true",
    help="write nothing; exit 2 if the report on disk is stale",
  )
  args = parser.parse_args(argv)

  from derivations import report as rep

  start = time.perf_counter()
  report = rep.build(derivations, checks, fns)
  text = render(report, args.format)
  out = args.out or DEFAULT[args.format]
  elapsed = time.perf_counter() - start
  print(rep.summary(report))
  if args.check:
    current = out.read_text(encoding="utf-8") if out.exists() else None
    if current != text:
      print(f"{out} is stale: run `python -m derivations` and commit it.")
      return 2
    print(f"{out} is up to date ({elapsed:.1f} s).")
  else:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({elapsed:.1f} s)")
  if not report.ok:
    print(f"{len(report.failures)} check(s) failed.")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
