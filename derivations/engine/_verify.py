"""Checks: what proves a step (general n, concrete n, limits, definitions).

A check reads a step's displayed expression only; it knows nothing of the
derivation model (:mod:`._model`), which builds on this module.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Protocol

import sympy as sp

from ._algebra import (
  Assumption,
  Context,
  concrete_zero,
  evaluate,
  is_zero,
  normal_form,
  specialise_matrix,
)
from ._display import (
  Chain,
  Label,
  Ordered,
)


class Shown(Protocol):
  """What a check reads of a step: its prose and its displayed expression."""

  @property
  def label(self) -> str: ...

  @property
  def expr(self) -> sp.Basic: ...


@dataclasses.dataclass(frozen=True)
class Verdict:
  ok: bool
  method: str  # how it was checked, one short phrase for the report
  detail: str = ""  # why it failed


class Check:
  """Something that proves (part of) a step. Subclasses implement run()."""

  def run(self, step: Shown, ctx: Context) -> Verdict:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class General(Check):
  """Both sides of the step's equation agree for general n.

  Attributes:
    assume: pairs ``(old, new)`` applied to the normal form, e.g.
      ``(KroneckerDelta(i, j), 0)`` for the case :math:`i \\neq j`.
    why: a few words on the assumptions, for the report.
  """

  assume: tuple[Assumption, ...] = ()
  why: str = ""

  def run(self, step, ctx):
    method = "general n"
    if self.why:
      method += f" ({self.why})"
    sides = [e for e in members(step.expr) if not e.has(Label)]
    if len(sides) < 2:
      return Verdict(False, method, "nothing to compare")
    values = [evaluate(e, ctx) for e in sides]
    for r in range(1, len(values)):
      diff = values[r - 1] - values[r]
      if not is_zero(diff, self.assume):
        residual = sp.sstr(normal_form(diff, self.assume))
        return Verdict(False, method, f"link {r}: residual {residual}"[:300])
    return Verdict(True, method)


@dataclasses.dataclass(frozen=True)
class Concrete(Check):
  """The step's right-hand side at n = 1..8 equals an explicit reference.

  Attributes:
    reference: ``size -> Matrix`` built from the explicit function, e.g. with
      ``Matrix.jacobian``.
    index: the free indices of the right-hand side, rows then columns.
    sizes: the concrete sizes.
    extra: integer values of other free symbols (e.g. the label ``ell``),
      as ``size -> {symbol: value}``.
    what: names the reference in the report, e.g. "Matrix.jacobian".
  """

  reference: Callable[[int], sp.Matrix]
  index: tuple[sp.Symbol, ...]
  sizes: tuple[int, ...] = tuple(range(1, 9))
  what: str = "Matrix.jacobian"
  extra: Callable[[int], Mapping[sp.Symbol, int]] | None = None

  def run(self, step, ctx):
    _, rhs = sides(step.expr)
    for size in self.sizes:
      extra = self.extra(size) if self.extra else None
      mine = specialise_matrix(rhs, ctx, size, self.index, extra)
      ref = self.reference(size)
      if ref.shape != mine.shape:
        return Verdict(
          False, self._method(), f"n={size}: shape {mine.shape} vs {ref.shape}"
        )
      for r, c in itertools.product(range(ref.rows), range(ref.cols)):
        if not concrete_zero(mine[r, c] - ref[r, c]):
          return Verdict(
            False, self._method(), f"n={size}, entry ({r + 1}, {c + 1}) differs"
          )
    return Verdict(True, self._method())

  def _method(self):
    lo, hi = min(self.sizes), max(self.sizes)
    return f"n = {lo}..{hi} vs {self.what}"


@dataclasses.dataclass(frozen=True)
class Explicit(Check):
  """An explicit check on concrete objects: ``claim() -> bool``."""

  claim: Callable[[], bool]
  method: str

  def run(self, step, ctx):
    try:
      ok = bool(self.claim())
    except Exception as e:  # a broken claim is a failed check
      return Verdict(False, self.method, f"{type(e).__name__}: {e}")
    return Verdict(ok, self.method, "" if ok else "claim is false")


@dataclasses.dataclass(frozen=True)
class Limit(Check):
  """The step's lhs is a limit, evaluated with ``sympy.limit``.

  The step's expression is ``Eq(Limit(f, x, x0, dir), value)``; the check
  computes the limit with ``sympy.limit`` (not ``Limit.doit``'s shortcuts)
  and compares.
  """

  def run(self, step, ctx):
    lhs, rhs = sides(step.expr)
    assert isinstance(lhs, sp.Limit), "a Limit check needs a Limit lhs"
    f, x, x0, direction = lhs.args
    got = sp.limit(evaluate(f, ctx), x, x0, str(direction))
    want = evaluate(rhs, ctx)
    ok = got == want or (got.is_finite and sp.simplify(got - want) == 0)
    return Verdict(ok, "sympy.limit", "" if ok else f"limit is {got}")


def members(expr: sp.Basic) -> tuple[sp.Expr, ...]:
  """The sides of an ``Eq`` or the links of a :class:`Chain`."""
  if isinstance(expr, sp.Equality):
    return (expr.lhs, expr.rhs)
  if isinstance(expr, Chain | Ordered):
    return tuple(expr.args)
  raise TypeError(f"a checked step needs an equation or a chain, got {expr!r}")


def sides(expr: sp.Basic) -> tuple[sp.Expr, sp.Expr]:
  """The first and last members of an equation or chain."""
  m = members(expr)
  return m[0], m[-1]


@dataclasses.dataclass(frozen=True)
class Defines(Check):
  """A definition step shows the very definition the checks substitute.

  The displayed right-hand side, evaluated, must equal the context's
  definition of the left-hand side for general n; a definition displayed one
  way and used another (softmax with :math:`e^{-z_i}` on screen) fails.
  """

  def run(self, step, ctx):
    lhs, rhs = sides(step.expr)
    diff = evaluate(lhs, ctx) - evaluate(rhs, ctx)
    method = "displayed = the definition the checks use"
    if is_zero(diff):
      return Verdict(True, method)
    return Verdict(False, method, f"residual {sp.sstr(normal_form(diff))}"[:300])
