r"""The command line: re-derive, check, and write the report.

In a checkout it runs as ``python -m derivations`` (or ``make report``) and
writes ``derivations/REPORT.md``. From an installed wheel it runs as
``jaxsmx-derive`` and writes ``REPORT.md`` into the current directory; it
never writes into the installed package. ``--out`` writes elsewhere.

Each derivation prints one line as it finishes, then the total time.

Exits 0 when every symbolic step, numeric comparison and worked example
passes, 1 otherwise, 2 for ``--check`` when the written report would differ
from the one on disk, and 3 when the report cannot be written or there is
nothing to compare it with (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence

HERE = pathlib.Path(__file__).resolve().parent
SUFFIX = {"markdown": ".md", "latex": ".tex"}
EXIT_UNUSABLE = 3


def is_checkout(here: pathlib.Path = HERE) -> bool:
  """Whether this package is the ``derivations/`` folder of a source checkout.

  True for ``python -m derivations`` in a clone and for an editable install
  (whose ``jaxsmx_derivations`` points at that folder); False for a wheel.
  """
  root = here.parent
  return (
    here.name == "derivations"
    and (root / "pyproject.toml").is_file()
    and (root / "jaxsmx" / "__init__.py").is_file()
  )


def default_out(fmt: str, here: pathlib.Path = HERE) -> pathlib.Path:
  """``derivations/REPORT.md`` in a checkout, ``./REPORT.md`` in an install."""
  name = "REPORT" + SUFFIX[fmt]
  return here / name if is_checkout(here) else pathlib.Path.cwd() / name


def render(report, fmt: str) -> str:
  from . import report as rep

  return rep.render_latex(report) if fmt == "latex" else rep.render_markdown(report)


def _prog() -> str:
  name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
  if name.startswith("jaxsmx-derive"):
    return "jaxsmx-derive"
  return f"python -m {__package__ or 'derivations'}"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog=_prog(),
    description="Re-derive every jaxsmx gradient with SymPy, check it "
    "against jaxsmx numerically and write the derivation report.",
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    help="where to write (default: derivations/REPORT.md in a checkout, "
    "./REPORT.md from an installed package; .tex for --format latex)",
  )
  parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
  parser.add_argument(
    "--check",
    action="store_true",
    help="write nothing; exit 2 if the report at --out (default as above) "
    "differs from what this run renders",
  )
  return parser


def _fail(message: str) -> int:
  print(f"{_prog()}: {message}", file=sys.stderr)
  return EXIT_UNUSABLE


def _unwritable(out: pathlib.Path) -> str | None:
  """Why ``out`` cannot be written, checked before the long run; None if it can."""
  if out.is_dir():
    return f"{out} is a directory; pass a file name to --out."
  parent = out.parent
  while not parent.exists() and parent != parent.parent:
    parent = parent.parent
  if not out.exists() and not parent.is_dir():
    return f"cannot write {out}: {parent} is not a directory; pass --out PATH."
  target = out if out.exists() else parent
  if not os.access(target, os.W_OK):
    return f"cannot write {out}: {target} is not writable; pass --out PATH."
  return None


def _check_target(out: pathlib.Path, explicit: bool) -> str | None:
  """Why ``--check`` has nothing to compare with; None if it has."""
  if out.is_file():
    return None
  if explicit or is_checkout():
    return f"--check: there is no report at {out} to compare with."
  return (
    f"--check: there is no checkout here to compare with ({HERE} is an "
    f"installed copy) and no {out.name} in {out.parent}. --check compares a "
    "fresh run with a report written earlier: run without --check first, or "
    "pass --out PATH to a report you have."
  )


def _progress_line(sec, seconds: float) -> str:
  checked = sec.checked_steps
  mark = "ok  " if sec.ok else "FAIL"
  return (
    f"{mark} {sec.derivation.key:30s} steps {sum(s.ok for s in checked):2d}/"
    f"{len(checked):<2d}  numeric {sum(r.ok for r in sec.numerics)}/"
    f"{len(sec.numerics)}  ({seconds:5.1f} s)"
  )


def _build(rep, derivations, checks, fns):
  """Runs every check, printing a line per derivation as it finishes."""
  start = time.perf_counter()

  def progress(sec) -> None:
    print(_progress_line(sec, time.perf_counter() - start), flush=True)

  return rep.build(derivations, checks, fns, progress=progress)


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
  args = _parser().parse_args(argv)
  out = args.out or default_out(args.format)
  why = _check_target(out, args.out is not None) if args.check else _unwritable(out)
  if why:
    return _fail(why)

  from . import report as rep

  start = time.perf_counter()
  print("re-deriving every gradient (SymPy) and checking jaxsmx (JAX) ...", flush=True)
  report = _build(rep, derivations, checks, fns)
  text = render(report, args.format)
  elapsed = time.perf_counter() - start
  for line in rep.summary(report).splitlines():
    if line.startswith("  "):  # the failure details; the per-derivation lines are out
      print(line)
  if args.check:
    current = out.read_text(encoding="utf-8")
    if current != text:
      print(f"{out} is stale: run `{_prog()}` and commit it ({elapsed:.1f} s).")
      return 2
    print(f"{out} is up to date ({elapsed:.1f} s).")
  else:
    try:
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(text, encoding="utf-8")
    except OSError as e:
      return _fail(f"cannot write {out}: {e.strerror or e}; pass --out PATH.")
    print(f"wrote {out} (total {elapsed:.1f} s)")
  if not report.ok:
    print(f"{len(report.failures)} check(s) failed.")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
