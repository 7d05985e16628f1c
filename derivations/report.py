r"""Runs every check and renders the derivation report (Markdown or LaTeX).

The report is rendered from the :class:`~derivations.engine.Derivation`
objects and the results of their checks, never from source files. It holds no
timings and reports numeric errors as bounds, so that two runs, on any
machine, write the same bytes.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from . import engine
from .agreement.numeric import Numeric, NumericResult
from .engine import Derivation, Example, StepResult, outcome

EXAMPLE_TOLERANCE = 1e-12  # jaxsmx (float64) against the exact value
SEED_TOLERANCE = 1e-4  # the seed prints 4 decimals (and rounds one of them up)


@dataclasses.dataclass(frozen=True)
class ExampleResult:
  example: Example
  exact: tuple[float, ...]
  jaxsmx: tuple[float, ...] | None
  ok: bool
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Section:
  derivation: Derivation
  steps: tuple[StepResult, ...]
  numerics: tuple[NumericResult, ...]
  examples: tuple[ExampleResult, ...]

  @property
  def symbolic_ok(self) -> bool:
    return all(s.ok for s in self.steps)

  @property
  def numeric_ok(self) -> bool:
    return all(r.ok for r in self.numerics)

  @property
  def ok(self) -> bool:
    return self.symbolic_ok and self.numeric_ok and all(e.ok for e in self.examples)

  @property
  def checked_steps(self) -> tuple[StepResult, ...]:
    return tuple(s for s in self.steps if s.verdicts)

  @property
  def worst_numeric(self) -> str:
    if not self.numerics:
      return "n/a"
    if not self.numeric_ok:
      bad = [r for r in self.numerics if not r.ok]
      return ", ".join(r.bucket for r in bad)
    return _numeric_bucket(max(r.max_error for r in self.numerics))


@dataclasses.dataclass(frozen=True)
class Report:
  sections: tuple[Section, ...]
  cases: tuple = ()  # derivations.agreement.cases.CaseResult
  mutations: str = ""  # the committed table of `make mutate`

  @property
  def ok(self) -> bool:
    return all(s.ok for s in self.sections) and all(c.ok for c in self.cases)

  @property
  def failures(self) -> list[str]:
    out = []
    for sec in self.sections:
      key = sec.derivation.key
      for n_, s in enumerate(sec.steps, 1):
        for v in s.verdicts:
          if not v.ok:
            out.append(f"{key} step {n_} [{v.method}]: {v.detail}")
      for r in sec.numerics:
        if not r.ok:
          out.append(f"{key} numeric {r.check.what}: {r.bucket} {r.error}".rstrip())
      for e in sec.examples:
        if not e.ok:
          out.append(f"{key} example: {e.detail}")
    from .agreement.cases import bound

    for c in self.cases:
      if not c.ok:
        out.append(f"case {c.case.name}: {bound(c)}")
    return out


def _numeric_bucket(err: float) -> str:
  from .agreement.numeric import bucket

  return bucket(err)


# ---------------------------------------------------------------------------
# Running the checks.


def _run_example(ex: Example, fns: Mapping[str, Callable] | None) -> ExampleResult:
  exact = tuple(float(sp.N(e, 30)) for e in ex.exact)
  detail = []
  ok = True
  if ex.seed is not None:
    for got, want in zip(exact, ex.seed, strict=True):
      if abs(got - want) > SEED_TOLERANCE + 1e-15:
        ok = False
        detail.append(f"exact {got:.6f} vs the article {want}")
  values = None
  if ex.call is not None:
    import jax

    module = _Module(fns)
    try:
      with jax.enable_x64(True):
        values = tuple(
          float(v) for v in np.asarray(ex.call(module), dtype=np.float64).ravel()
        )
    except Exception as e:  # report, do not crash
      return ExampleResult(ex, exact, None, False, f"{type(e).__name__}: {e}")
    for got, want in zip(values, exact, strict=True):
      if not abs(got - want) <= EXAMPLE_TOLERANCE:
        ok = False
        detail.append(f"jaxsmx {got!r} vs exact {want!r}")
  return ExampleResult(ex, exact, values, ok, "; ".join(detail))


class _Module:
  """``jaxsmx`` with some functions replaced (for tests)."""

  def __init__(self, fns):
    self._fns = dict(fns or {})

  def __getattr__(self, name):
    if name in self._fns:
      return self._fns[name]
    import jaxsmx

    return getattr(jaxsmx, name)


MUTATIONS = pathlib.Path(__file__).resolve().parent / "MUTATIONS.md"


def build(
  derivations: Sequence[Derivation] | None = None,
  checks: Sequence[Numeric] | None = None,
  fns: Mapping[str, Callable] | None = None,
  cases: Sequence | None = None,
  *,
  progress: Callable[[Section], None] | None = None,
) -> Report:
  """Re-derives everything: symbolic checks, numeric checks, examples.

  Args:
    derivations: default :func:`derivations.all_derivations`.
    checks: numeric checks; default every check whose derivation is present.
    fns: replacements for jaxsmx functions, by name (for tests).
    cases: the option, edge and dtype cases (:func:`derivations.cases`);
      default all of them when ``derivations`` is the default, else none.
    progress: called with each section as soon as it is complete (its
      numeric checks then run per derivation).

  Returns:
    The report data, ready to render.
  """
  from . import all_derivations
  from .agreement.numeric import attached, run_numerics

  derivations_default = derivations is None
  derivations = tuple(all_derivations() if derivations is None else derivations)
  by_key = {d.key: d for d in derivations}
  if checks is None:
    checks = list(attached(derivations))
  by_derivation: dict[str, list[NumericResult]] = {}
  if progress is None:
    for r in run_numerics(checks, by_key, fns) if checks else []:
      by_derivation.setdefault(r.check.key, []).append(r)
  sections = []
  for d in derivations:
    steps = engine.check_derivation(d)
    examples = tuple(_run_example(ex, fns) for ex in d.examples)
    if progress is not None:
      mine = [c for c in checks if c.key == d.key]
      by_derivation[d.key] = run_numerics(mine, by_key, fns) if mine else []
    sec = Section(d, steps, tuple(by_derivation.get(d.key, ())), examples)
    sections.append(sec)
    if progress is not None:
      progress(sec)
  from . import cases as every_case
  from .agreement.cases import run_cases

  if cases is None:
    cases = every_case() if derivations_default else ()
  case_results = tuple(run_cases(cases, fns)) if cases else ()
  mutations = MUTATIONS.read_text(encoding="utf-8") if MUTATIONS.exists() else ""
  return Report(tuple(sections), case_results, mutations if derivations_default else "")


# ---------------------------------------------------------------------------
# LaTeX of expressions.


def tex(expr: sp.Basic) -> str:
  """LaTeX of one displayed expression (chains on one line)."""
  if isinstance(expr, sp.Tuple):
    return r",\qquad ".join(tex(e) for e in expr)
  return sp.latex(expr)


def tex_block(expr: sp.Basic) -> str:
  """LaTeX of a displayed step; long chains become an ``aligned`` block."""
  if isinstance(expr, engine.Chain) and len(expr.args) >= 3:
    first, *rest = expr.args
    lines = [f"{sp.latex(first)} &= {sp.latex(rest[0])}"]
    lines += [f"&= {sp.latex(e)}" for e in rest[1:]]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
  return tex(expr)


def plain_sympy(expr: sp.Basic) -> str:
  """The expression as SymPy source (display nodes unwrapped)."""
  e = expr.replace(lambda x: isinstance(x, sp.UnevaluatedExpr), lambda x: x.args[0])
  e = e.replace(lambda x: isinstance(x, engine.Display), lambda x: x.plain())
  return sp.sstr(e)


# ---------------------------------------------------------------------------
# Markdown.

_INTRO = """\
This report is generated by `python -m derivations` from the derivations in
[`derivations/`](.) and the jaxsmx package; do not edit it by hand. Each
derivation is a list of steps, each step a SymPy expression with the checks
that prove it. Rerunning the command re-derives and re-checks everything.
The derivations start from a CSDN post in Chinese by ytusdc (2023), whose
title reads "the softmax function, its derivatives, and cross-entropy",
called "the article" below; its five steps are tagged
"Seed step 1" to "Seed step 5".

How each step is checked:

- **general n**: both sides are evaluated (definitions substituted,
  derivatives taken with `sympy.diff` for symbolic $n$, with `IndexedBase`
  and `Sum`), the sums over Kronecker deltas are closed by the targeted
  rewriting in `derivations/engine/_algebra.py`, and the difference must reduce to 0.
  Free indices range over $1, \\dots, n$.
- **n = 1..8 vs Matrix.jacobian** (or the range stated): the general result,
  specialised to each concrete $n$, must equal the Jacobian (or
  `sympy.hessian`) of the explicit function of $z_1, \\dots, z_n$, entry by
  entry. For a reverse-mode rule the reference is
  `Matrix.jacobian(...).T` times a symbolic cotangent, for $n = 1, \\dots, 6$.
- **numeric**: the closed form is lambdified (`modules="jax"`) and compared
  in float64 with `jax.jacrev`, `jax.grad`, `jax.hessian` or `jax.vjp` of the
  jaxsmx function, which uses the hand-written `custom_vjp` rule, for
  $n = 2, \\dots, 8$ at seeded random points. The tolerance is $10^{-10}$;
  errors are shown as bounds so that the report is the same on every machine.

Notation: $z$ logits, $a = \\operatorname{softmax}(z)$, $y$ labels (targets),
$\\delta_{ij}$ the Kronecker delta, $g$ the cotangent a reverse-mode rule
receives (a scalar per example for the losses) and $\\bar{x}$ the cotangent it
returns for $x$.
"""


def _anchor(key: str) -> str:
  return key.replace("_", "-")


def _verdict_line(s: StepResult) -> str:
  parts = []
  for v in s.verdicts:
    mark = outcome(v.ok)
    text = f"{mark} {v.method}"
    if not v.ok and v.detail:
      text += f" — {v.detail}"
    parts.append(text)
  return " · ".join(parts)


def render_markdown(report: Report) -> str:
  out: list[str] = []
  w = out.append
  n_steps = sum(len(s.checked_steps) for s in report.sections)
  n_ok = sum(sum(st.ok for st in s.checked_steps) for s in report.sections)
  numerics = [r for s in report.sections for r in s.numerics]
  w("# jaxsmx derivation report\n")
  w(_INTRO)
  status = "all checks pass" if report.ok else "some checks FAIL"
  w(
    f"**Status: {status}.** {n_ok} of {n_steps} checked steps verified "
    f"symbolically; {sum(r.ok for r in numerics)} of {len(numerics)} numeric "
    "comparisons with jaxsmx within tolerance.\n"
  )
  w("## Contents\n")
  for num, sec in enumerate(report.sections, 1):
    d = sec.derivation
    w(f"{num}. [{d.title}](#{_anchor(d.key)})")
  extra = []
  if report.cases:
    extra.append(("options", "Options, edges and dtypes"))
  if report.mutations:
    extra.append(("mutations", "Mutation test"))
  for r, (key, title) in enumerate(extra):
    w(f"{len(report.sections) + 1 + r}. [{title}](#{key})")
  w(f"{len(report.sections) + 1 + len(extra)}. [Summary](#summary)\n")
  for num, sec in enumerate(report.sections, 1):
    _section_markdown(out, num, sec)
  num = len(report.sections)
  if report.cases:
    num += 1
    _cases_markdown(out, num, report.cases)
  if report.mutations:
    num += 1
    w('<a id="mutations"></a>\n')
    w(f"## {num}. Mutation test\n")
    w(_MUTATION_INTRO)
    w(report.mutations)
  _summary_markdown(out, report)
  return "\n".join(out).rstrip() + "\n"


def _section_markdown(out: list[str], num: int, sec: Section) -> None:
  w = out.append
  d = sec.derivation
  fns = ", ".join(f"`jaxsmx.{f}`" for f in d.functions)
  w(f'<a id="{_anchor(d.key)}"></a>\n')
  w(f"## {num}. {d.title}\n")
  w(f"{fns}. {d.intro}\n")
  if sec.examples:
    _examples_markdown(out, sec.examples)
  step_no = 0
  for s in sec.steps:
    step = s.step
    if step.role == "vjp":
      continue
    if step.role == "definition":
      tag = "Definition"
    else:
      step_no += 1
      tag = step.tag or f"Step {step_no}"
    label = f" {step.label}" if step.label else ""
    w(f"**{tag}.**{label}\n")
    w(f"$$\n{tex_block(step.expr)}\n$$\n")
    if s.verdicts:
      w(_verdict_line(s) + "\n")
  vjps = [s for s in sec.steps if s.step.role == "vjp"]
  if vjps:
    w("### Reverse-mode rule\n")
    w(
      "The closed form jaxsmx's `custom_vjp` backward rule implements, "
      "derived as $J^{\\mathsf T} g$ and proved equal to it:\n"
    )
    for s in vjps:
      if s.step.label:
        w(s.step.label + "\n")
      w(f"$$\n{tex_block(s.step.expr)}\n$$\n")
      w(f"As a SymPy expression: `{plain_sympy(s.step.formula)}`\n")
      if s.verdicts:
        w(_verdict_line(s) + "\n")
  if sec.numerics:
    w("### Numeric agreement with jaxsmx\n")
    w("| Quantity | Compared with | n | Max abs error | |")
    w("|---|---|---|---|---|")
    for r in sec.numerics:
      c = r.check
      mark = outcome(r.ok)
      err = r.bucket if not r.error else f"{r.bucket}: {r.error}"
      lo, hi = min(r.sizes), max(r.sizes)
      ref = f"`{c.reference}` of `jaxsmx.{c.function}`"
      w(f"| {c.what} | {ref} | {lo}..{hi} | {err} | {mark} |")
    w("")
  mark = outcome(sec.ok)
  checked = sec.checked_steps
  w(
    f"**Verdict: {mark}** {sum(s.ok for s in checked)}/{len(checked)} steps "
    f"verified; {sum(r.ok for r in sec.numerics)}/{len(sec.numerics)} numeric "
    "checks agree.\n"
  )


_CASES_INTRO = """\
Each jaxsmx function, called with every option that changes its gradient and
at the edges its closed forms define, differentiated with `jax.vjp` against
a random cotangent (one row's cotangent is 0). The expected gradient is the
derivation's closed form, lambdified for general $n$ and evaluated on the
slice the options define: masking means slicing, so a row keeps the classes
with $m_k = 1$, the closed form is evaluated at $n = \\sum_k m_k$ and masked
entries get 0; a $-\\infty$ logit is evaluated as it stands (the limit, with
probability 0); empty slices, ignored and dropped rows, and a zero cotangent
give 0. Where the loss's definition is a step of its derivation (the step
named `value`), the function's *value* is compared too, evaluated the same
way on each row's kept classes. Rows marked "second order" compare the
gradient of $\\langle v, \\text{VJP}\\rangle$ for a random direction $v$
(reverse over reverse, through the forward rule) with the Hessian step
contracted with $v$. The error is $\\max |\\text{got} - \\text{want}| / \\max(1,
|\\text{want}|)$; infinities must match exactly. The float32 and bfloat16
rows feed the function inputs in that dtype (a second dtype: the other
floating input's) and compare with the closed form at the rounded inputs,
with a tolerance tied to the dtype's epsilon ($64\\,\\epsilon$ for float32,
$4\\,\\epsilon$ for bfloat16; $10^{-10}$ for float64); the result and gradient
dtypes must be the promoted dtype and the input's dtype. The fused loss's
16-bit rows ("16-bit backward") are held to a bound per entry derived from
the unit roundoffs and the sizes (`derivations.linear.bound_16`), tight
enough that dropping the low part of the split gradient fails.
"""

_MUTATION_INTRO = """\
`python -m derivations.mutate` (`make mutate`) applies each plausible
one-line bug below to a temporary copy of jaxsmx (its backward rules, forward
values, masks, guards and kernel offsets), imports the copy in a subprocess and
runs the derivation checks alone on it (the numeric comparisons and the option
cases of the functions in the mutated file). The table is that command's
output, committed as `derivations/MUTATIONS.md`; a mutation whose text no
longer occurs in its file fails the command.
"""


def _cases_markdown(out: list[str], num: int, results) -> None:
  from .agreement.cases import bound

  w = out.append
  w('<a id="options"></a>\n')
  w(f"## {num}. Options, edges and dtypes\n")
  w(_CASES_INTRO)
  by_fn: dict[str, list] = {}
  for r in results:
    by_fn.setdefault(r.case.function, []).append(r)
  ok = sum(r.ok for r in results)
  w(f"**{ok} of {len(results)} cases agree.**\n")
  for fn, rs in by_fn.items():
    dtypes = []
    for r in rs:
      dt = r.case.dtype + (f" / {r.case.other_dtype}" if r.case.other_dtype else "")
      if dt not in dtypes:
        dtypes.append(dt)
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in rs:
      dt = r.case.dtype + (f" / {r.case.other_dtype}" if r.case.other_dtype else "")
      mark = outcome(r.ok)
      rows.setdefault((r.case.option, r.case.wrt), {})[dt] = f"{mark} {bound(r)}"
    w(f"### `{fn}`\n")
    w("| options | gradient of | " + " | ".join(dtypes) + " |")
    w("|---|---|" + "---|" * len(dtypes))
    for (option, wrt), cells in rows.items():
      w(
        f"| {option} | `{wrt}` | " + " | ".join(cells.get(d, "") for d in dtypes) + " |"
      )
    w("")
    _paths_markdown(out, rs)


def _paths_markdown(out: list[str], results) -> None:
  """Which kernel paths (docs/internals.md) the cases took, and how often."""
  counts: dict[str, int] = {}
  for r in results:
    for p in r.paths:
      counts[p] = counts.get(p, 0) + 1
  if counts:
    took = ", ".join(f"`{p}` ({n})" for p, n in sorted(counts.items()))
    out.append(f"Kernel paths taken (and by how many cases): {took}.\n")


def _examples_markdown(out: list[str], examples: Sequence[ExampleResult]) -> None:
  w = out.append
  w("**Worked examples from the article.**\n")
  w("| Example | Exact (SymPy) | Article | jaxsmx (float64) | |")
  w("|---|---|---|---|---|")
  for e in examples:
    ex = e.example
    exact = ", ".join(f"{v:.4f}" for v in e.exact)
    seed = ", ".join(f"{v:.4f}" for v in ex.seed) if ex.seed else "—"
    got = ", ".join(f"{v:.4f}" for v in e.jaxsmx) if e.jaxsmx else "—"
    mark = outcome(e.ok)
    call = f"<br>`{ex.call_text}`" if ex.call_text else ""
    w(f"| {ex.label}{call} | {exact} | {seed} | {got} | {mark} |")
  w("")


def _summary_markdown(out: list[str], report: Report) -> None:
  w = out.append
  w('<a id="summary"></a>\n')
  w("## Summary\n")
  w("| Function | Identity | Symbolic check | Numeric max error | Verdict |")
  w("|---|---|---|---|---|")
  for sec in report.sections:
    d = sec.derivation
    checked = sec.checked_steps
    sym = f"{sum(s.ok for s in checked)}/{len(checked)} steps"
    mark = outcome(sec.ok)
    fns = ", ".join(f"`{f}`" for f in d.functions)
    link = f"[{fns}](#{_anchor(d.key)})"
    w(f"| {link} | ${tex(d.headline)}$ | {sym} | {sec.worst_numeric} | {mark} |")
  w("")


# ---------------------------------------------------------------------------
# LaTeX.

_TEX_TEXT = {
  "\\": r"\textbackslash{}",
  "_": r"\_",
  "%": r"\%",
  "&": r"\&",
  "#": r"\#",
  "{": r"\{",
  "}": r"\}",
  "~": r"\textasciitilde{}",
  "^": r"\textasciicircum{}",
  "≠": r"$\neq$",
  "δ": r"$\delta$",
  "Σ": r"$\Sigma$",
  "ℓ": r"$\ell$",
  "α": r"$\alpha$",
  "λ": r"$\lambda$",
  "⌈": r"$\lceil$",
  "⌉": r"$\rceil$",
  "—": "---",
  "…": r"\ldots{}",
  "²": r"$^2$",
  "≤": r"$\le$",
}


def _tex_text(text: str) -> str:
  """Markdown prose (with inline ``$math$``) as LaTeX."""
  parts = re.split(r"(\$[^$]+\$)", text)
  out = []
  for part in parts:
    if part.startswith("$") and part.endswith("$") and len(part) > 1:
      out.append(part)
      continue
    s = "".join(_TEX_TEXT.get(ch, ch) for ch in part)
    s = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", s)
    s = re.sub(r"`(.+?)`", r"\\texttt{\1}", s)
    out.append(s)
  return "".join(out)


def render_latex(report: Report) -> str:
  out: list[str] = []
  w = out.append
  w(r"\documentclass[11pt]{article}")
  w(r"\usepackage{amsmath,amssymb}")
  w(r"\usepackage[margin=2.2cm]{geometry}")
  w(r"\usepackage{longtable}")
  w(r"\title{jaxsmx derivation report}")
  w(r"\date{}")
  w(r"\begin{document}")
  w(r"\maketitle")
  status = "all checks pass" if report.ok else "some checks FAIL"
  w(_tex_text(f"Generated by `python -m derivations`. Status: {status}.") + "\n")
  for sec in report.sections:
    d = sec.derivation
    w(f"\\section{{{_tex_text(d.title)}}}")
    fns = ", ".join(f"`jaxsmx.{f}`" for f in d.functions)
    w(_tex_text(f"{fns}. {d.intro}") + "\n")
    for e in sec.examples:
      exact = ", ".join(f"{v:.4f}" for v in e.exact)
      got = ", ".join(f"{v:.4f}" for v in e.jaxsmx) if e.jaxsmx else "---"
      w(_tex_text(f"Example: {e.example.label} Exact {exact}; jaxsmx {got}.") + "\n")
    step_no = 0
    for s in sec.steps:
      step = s.step
      if step.role == "vjp":
        tag = "Reverse-mode rule"
      elif step.role == "definition":
        tag = "Definition"
      else:
        step_no += 1
        tag = step.tag or f"Step {step_no}"
      w(f"\\paragraph{{{_tex_text(tag)}.}} " + _tex_text(step.label))
      w("\\[\n" + tex_block(step.expr) + "\n\\]")
      if s.verdicts:
        w(_tex_text(_verdict_line(s)) + "\n")
    if sec.numerics:
      w(r"\begin{center}\begin{tabular}{llll}")
      w(r"Quantity & Compared with & $n$ & Max abs error \\ \hline")
      for r in sec.numerics:
        c = r.check
        err = _tex_text(r.bucket)
        lo, hi = min(r.sizes), max(r.sizes)
        w(
          _tex_text(f"{c.what} & `{c.reference}` of `{c.function}` & ")
          + f"{lo}--{hi} & {err} \\\\"
        )
      w(r"\end{tabular}\end{center}")
  w(r"\section{Summary}")
  w(r"\begin{longtable}{p{4cm}p{6.5cm}p{2cm}p{2cm}l}")
  w(r"Function & Identity & Symbolic & Numeric & Verdict \\ \hline")
  for sec in report.sections:
    d = sec.derivation
    checked = sec.checked_steps
    sym = f"{sum(s.ok for s in checked)}/{len(checked)}"
    fns = _tex_text(", ".join(d.functions))
    verdict = "pass" if sec.ok else "FAIL"
    err = _tex_text(sec.worst_numeric)
    w(f"{fns} & ${tex(d.headline)}$ & {sym} & {err} & {verdict} \\\\")
  w(r"\end{longtable}")
  w(r"\end{document}")
  return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# One-screen summary.


def summary(report: Report) -> str:
  lines = []
  for sec in report.sections:
    d = sec.derivation
    checked = sec.checked_steps
    mark = "ok  " if sec.ok else "FAIL"
    errs = [r.max_error for r in sec.numerics if not r.error]
    worst = f"{max(errs):.1e}" if errs else "  -    "
    lines.append(
      f"{mark} {d.key:30s} steps {sum(s.ok for s in checked):2d}/{len(checked):<2d}"
      f"  numeric {sum(r.ok for r in sec.numerics)}/{len(sec.numerics)}"
      f"  max err {worst}"
    )
  fails = report.failures
  for f in fails[:10]:
    lines.append(f"  FAIL {f}"[:160])
  if len(fails) > 10:
    lines.append(f"  ... and {len(fails) - 10} more")
  return "\n".join(lines)
