"""The derivation report: every step checks, the report is current, the CLI.

One full build (symbolic and numeric) is shared by this file's tests (the
module fixture ``full_report``); the other tests run small, hand-made
derivations and so stay fast.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import sympy as sp

from derivations import __main__ as cli
from derivations import all_derivations, engine
from derivations import report as rep
from derivations.engine import (
  Chain,
  Concrete,
  Context,
  D,
  Derivation,
  Dot,
  General,
  Step,
  a,
  eq,
  explicit_softmax,
  i,
  j,
  k,
  n,
  softmax_of,
  summation,
  vec,
  z,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
delta = sp.KroneckerDelta
CTX = Context({a: softmax_of(z)})


@pytest.fixture(scope="module")
def full_report() -> rep.Report:
  """The full derivation report (every derivation, symbolic and numeric, and
  every option, edge and dtype case): about two minutes on one core, so built
  once, for the tests of this file only (make test's workers take whole
  files, so one worker builds it)."""
  return rep.build()


def test_every_step_is_verified_symbolically(full_report):
  failures = [
    f"{sec.derivation.key}: {s.step.label} {[v.detail for v in s.verdicts if not v.ok]}"
    for sec in full_report.sections
    for s in sec.steps
    if not s.ok
  ]
  assert not failures
  checked = sum(len(sec.checked_steps) for sec in full_report.sections)
  assert checked >= 60


def test_every_closed_form_agrees_with_jaxsmx(full_report):
  results = [r for sec in full_report.sections for r in sec.numerics]
  assert len(results) >= 30
  bad = [(r.check.name, r.max_error, r.error) for r in results if not r.ok]
  assert not bad
  assert max(r.max_error for r in results) <= 1e-10
  assert all(r.sizes == tuple(range(2, 9)) for r in results)


def test_seed_examples_match(full_report):
  (softmax,) = [s for s in full_report.sections if s.derivation.key == "softmax"]
  (example,) = softmax.examples
  assert example.ok
  assert [round(v, 4) for v in example.jaxsmx] == [0.8789, 0.1189, 0.0022]
  (ce,) = [
    s for s in full_report.sections if s.derivation.key == "softmax_cross_entropy"
  ]
  got = [e.jaxsmx[0] for e in ce.examples]
  assert all(e.ok for e in ce.examples)
  assert got == pytest.approx([-sp.log(0.6), -sp.log(0.1), -sp.log(0.3)], abs=1e-12)


def test_every_function_has_a_vjp_step_and_numeric_check(full_report):
  import jaxsmx

  covered = set()
  for sec in full_report.sections:
    assert any(s.step.role == "vjp" for s in sec.steps), sec.derivation.key
    covered.update(r.check.function for r in sec.numerics)
  assert covered == set(jaxsmx.__all__)


def test_every_vjp_is_proved_for_general_and_concrete_n(full_report):
  for sec in full_report.sections:
    for s in sec.steps:
      if s.step.role != "vjp":
        continue
      methods = [v.method for v in s.verdicts]
      assert any(m.startswith("general n") for m in methods), sec.derivation.key
      assert any("Matrix.jacobian(...).T g" in m for m in methods), sec.derivation.key
      assert s.ok


def test_committed_report_is_current(full_report):
  committed = (REPO / "derivations" / "REPORT.md").read_text(encoding="utf-8")
  fresh = rep.render_markdown(full_report)
  assert fresh == committed, (
    "derivations/REPORT.md is stale: run `python -m derivations` and commit it"
  )


def test_latex_report_renders(full_report, tmp_path):
  text = rep.render_latex(full_report)
  assert text.startswith(r"\documentclass")
  assert text.rstrip().endswith(r"\end{document}")
  assert text.count(r"\section{") == len(full_report.sections) + 1
  assert text.count(r"\begin{aligned}") == text.count(r"\end{aligned}")
  assert "✅" not in text and "α" not in text  # pdflatex-safe


def test_seed_steps_appear_in_order(full_report):
  md = rep.render_markdown(full_report)
  positions = [md.index(f"**Seed step {s}.**") for s in range(1, 6)]
  assert positions == sorted(positions)


# ---------------------------------------------------------------------------
# The checks can fail.


def test_wrong_symbolic_step_is_caught():
  right = Step("i = j", eq(D(a[i], z[i]), Dot(a[i], 1 - a[i])), (General(),))
  wrong = Step("i = j", eq(D(a[i], z[i]), Dot(a[i], 1 + a[i])), (General(),))
  assert engine.check_step(right, CTX).ok
  result = engine.check_step(wrong, CTX)
  assert not result.ok
  assert "residual" in result.verdicts[0].detail


def test_wrong_case_assumption_is_caught():
  # The i != j case without its assumption is false: it misses delta_ij a_i.
  step = Step("i != j", eq(D(a[j], z[i]), -a[i] * a[j]), (General(),))
  assert not engine.check_step(step, CTX).ok
  step = Step(
    "i != j", eq(D(a[j], z[i]), -a[i] * a[j]), (General(((delta(i, j), 0),)),)
  )
  assert engine.check_step(step, CTX).ok


def test_wrong_link_in_a_chain_is_caught():
  ok = Chain(
    D(a[i], z[j]), Dot(a[i], delta(i, j) - a[j]), a[i] * delta(i, j) - a[i] * a[j]
  )
  bad = Chain(D(a[i], z[j]), Dot(a[i], delta(i, j) - a[j]), a[i] * delta(i, j) - a[j])
  assert engine.check_step(Step("", ok, (General(),)), CTX).ok
  verdict = engine.check_step(Step("", bad, (General(),)), CTX).verdicts[0]
  assert not verdict.ok and verdict.detail.startswith("link 2")


def test_concrete_check_catches_a_wrong_jacobian():
  def reference(size):
    return explicit_softmax(size).jacobian(vec(z, size))

  wrong = eq(D(a[i], z[j]), Dot(a[i], delta(i, j) - a[i]))  # a_i a_i, not a_i a_j
  right = eq(D(a[i], z[j]), Dot(a[i], delta(i, j) - a[j]))
  check = Concrete(reference, (i, j), sizes=(1, 2, 3))
  assert check.run(Step("", right), CTX).ok
  verdict = check.run(Step("", wrong), CTX)
  assert not verdict.ok
  # n = 1 cannot tell them apart; n = 2 can.
  assert verdict.detail.startswith("n=2")


def test_kronecker_sums_close():
  f = sp.Function("f")
  s = summation(delta(i, k) * f(k) + 3 * a[k], k)
  closed = engine.close_sums(s)
  assert closed == f(i) + 3 * summation(a[k], k)
  # the same sum under another index name cancels after canonical renaming
  diff = summation(a[j], j) - summation(a[k], k)
  assert engine.canonical_dummies(diff) == 0
  assert engine.is_zero(summation(delta(i, k) * a[k], k) - a[i])
  assert not engine.is_zero(summation(delta(i, k) * a[k], k) - a[j])


def test_general_n_specialises_to_matrix_jacobian():
  d = all_derivations()[0]
  formula = d.step("jacobian").formula
  for size in range(1, 9):
    mine = engine.specialise_matrix(formula, d.ctx, size, (i, j))
    ref = explicit_softmax(size).jacobian(vec(z, size))
    assert all(engine.concrete_zero(e) for e in mine - ref)


def test_sum_over_n_is_symbolic():
  d = all_derivations()[0]
  assert d.step("vjp").formula.has(n)


# ---------------------------------------------------------------------------
# The command line.


def _tiny(wrong: bool = False) -> Derivation:
  rhs = Dot(a[i], 1 + a[i]) if wrong else Dot(a[i], 1 - a[i])
  return Derivation(
    key="tiny",
    title="Tiny",
    functions=("softmax",),
    intro="A one-step derivation.",
    ctx=CTX,
    steps=(Step("i = j", eq(D(a[i], z[i]), rhs), (General(),)),),
    headline=eq(D(a[i], z[i]), rhs),
  )


def test_cli_exit_status(tmp_path, capsys):
  out = tmp_path / "r.md"
  assert cli.main(["--out", str(out)], derivations=[_tiny()], checks=[]) == 0
  assert "Tiny" in out.read_text(encoding="utf-8")
  assert cli.main(["--out", str(out), "--check"], derivations=[_tiny()], checks=[]) == 0
  assert cli.main(["--out", str(out)], derivations=[_tiny(wrong=True)], checks=[]) == 1
  assert "FAIL" in capsys.readouterr().out
  assert "FAIL" in out.read_text(encoding="utf-8")


def test_cli_check_reports_stale(tmp_path):
  out = tmp_path / "r.md"
  out.write_text("old\n", encoding="utf-8")
  assert cli.main(["--out", str(out), "--check"], derivations=[_tiny()], checks=[]) == 2
  assert out.read_text(encoding="utf-8") == "old\n"


def test_cli_latex(tmp_path):
  out = tmp_path / "r.tex"
  assert (
    cli.main(["--format", "latex", "--out", str(out)], derivations=[_tiny()], checks=[])
    == 0
  )
  text = out.read_text(encoding="utf-8")
  assert r"\begin{document}" in text and r"\section{Tiny}" in text


def test_jaxsmx_does_not_import_sympy():
  code = "import sys, jaxsmx; sys.exit('sympy' in sys.modules)"
  assert (
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
  )


def test_the_cases_reach_every_kernel_path_of_the_fused_loss(full_report):
  # each case records the paths its trace took; together they are all of them
  from jaxsmx._linear import PATHS

  fn = "linear_softmax_cross_entropy"
  fused = [r for r in full_report.cases if r.case.function == fn]
  taken = set().union(*(r.paths for r in fused))
  assert taken == set(PATHS), set(PATHS) - taken
  marked = [r for r in fused if r.case.path]
  assert {r.case.path for r in marked} >= {"reduced_one_pass", "dx_rows_loop"}
  assert all(r.case.path in r.paths and r.ok for r in marked)
