"""The derivation model: steps, examples, derivations and running their checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from ._algebra import Context
from ._verify import Check, Defines, Verdict, members

# ---------------------------------------------------------------------------
# Steps and derivations.


@dataclasses.dataclass(frozen=True)
class Step:
  """One line of a derivation.

  Attributes:
    label: Markdown prose; may contain inline ``$...$`` math.
    expr: the SymPy expression shown, usually ``eq(lhs, rhs)``.
    checks: what proves it; empty for a definition.
    ctx: overrides the derivation's context for this step.
    name: a handle by which numeric checks find the step's formula.
    role: ``"definition"``, ``"step"``, ``"result"`` (a closed form the
      library relies on) or ``"vjp"`` (the formula a bwd rule implements).
    tag: a heading that replaces the step number, e.g. "Seed step 1".
    agrees: numeric comparisons of this step's closed form with JAX
      autodiff of jaxsmx (:class:`derivations.agreement.Numeric`); data that
      the agreement layer runs, all steps in one compiled batch, so
      :func:`check_step` leaves them out.
  """

  label: str
  expr: sp.Basic
  checks: tuple[Check, ...] = ()
  ctx: Context | None = None
  name: str = ""
  role: str = "step"
  tag: str = ""
  agrees: tuple[Any, ...] = ()

  @property
  def formula(self) -> sp.Expr:
    """The last member of the step's equation: its closed form."""
    return members(self.expr)[-1]


@dataclasses.dataclass(frozen=True)
class Example:
  """A worked numeric example: an exact SymPy value against jaxsmx.

  Attributes:
    label: Markdown prose, e.g. "softmax(3, 1, -3)".
    exact: SymPy expressions whose values are the example's numbers.
    seed: the numbers the article prints, or None.
    call: ``jaxsmx_module -> sequence of floats``; None if the example has no
      jaxsmx counterpart.
    call_text: the call, shown in the report.
  """

  label: str
  exact: tuple[sp.Expr, ...]
  seed: tuple[float, ...] | None
  call: Callable[[Any], Sequence[float]] | None
  call_text: str = ""


@dataclasses.dataclass(frozen=True)
class Derivation:
  """A derivation for one jaxsmx function (or a family of them).

  Attributes:
    key: short identifier, e.g. ``"softmax"``.
    title: section title.
    functions: the jaxsmx names the derivation covers.
    intro: Markdown prose opening the section.
    ctx: the definitions the steps work under.
    steps: the ordered steps.
    headline: the identity shown in the summary table.
    examples: worked examples.
  """

  key: str
  title: str
  functions: tuple[str, ...]
  intro: str
  ctx: Context
  steps: tuple[Step, ...]
  headline: sp.Basic
  examples: tuple[Example, ...] = ()

  def step(self, name: str) -> Step:
    for s in self.steps:
      if s.name == name:
        return s
    raise KeyError(f"{self.key} has no step named {name!r}")


@dataclasses.dataclass(frozen=True)
class StepResult:
  step: Step
  verdicts: tuple[Verdict, ...]

  @property
  def ok(self) -> bool:
    return all(v.ok for v in self.verdicts)


def _defined(step: Step, ctx: Context) -> bool:
  if step.role != "definition" or not isinstance(step.expr, sp.Equality):
    return False
  lhs = step.expr.lhs
  return ctx.substitute(lhs) != lhs


def check_step(step: Step, ctx: Context) -> StepResult:
  """Runs every check of one step; an exception counts as a failure.

  A definition step whose left-hand side the context defines also gets
  :class:`Defines`.
  """
  verdicts = []
  checks = step.checks
  if _defined(step, step.ctx or ctx):
    checks = (Defines(), *checks)
  for check in checks:
    try:
      verdicts.append(check.run(step, step.ctx or ctx))
    except Exception as e:  # report, do not crash the whole run
      verdicts.append(
        Verdict(False, type(check).__name__, f"{type(e).__name__}: {e}"[:300])
      )
  return StepResult(step, tuple(verdicts))


def check_derivation(d: Derivation) -> tuple[StepResult, ...]:
  return tuple(check_step(s, d.ctx) for s in d.steps)
