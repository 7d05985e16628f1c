"""Display nodes: how a step is printed, and how each node evaluates itself."""

from __future__ import annotations

from typing import Any

import sympy as sp

from ._symbols import (
  n,
)

# ---------------------------------------------------------------------------
# Display nodes that know how to evaluate themselves.


def _powered(node, printer, exp):
  s = node._latex_body(printer)
  if exp is None:
    return s
  return rf"\left({s}\right)^{{{exp}}}"


class _Printed:
  """Mixin: LaTeX via ``_latex_body``, raised to a power when asked."""

  def _latex(self, printer, exp=None):
    return _powered(self, printer, exp)


class Display(_Printed, sp.Function):
  """A display node: printed its own way, evaluated by :meth:`plain`."""

  def plain(self) -> sp.Expr:
    raise NotImplementedError


class D(_Printed, sp.Function):
  r"""Unevaluated partial derivative, printed as :math:`\partial f/\partial x`.

  ``D(f, x)`` is evaluated by :func:`evaluate` as ``sympy.diff`` of the
  evaluated ``f`` with respect to ``x``; definitions of ``x`` itself are held
  back while differentiating, so :math:`\partial C_j / \partial a_j` treats
  :math:`a_j` as the variable.
  """

  nargs = 2

  def _latex_body(self, printer):
    f, x = self.args
    fl, xl = printer._print(f), printer._print(x)
    return rf"\frac{{\partial {fl}}}{{\partial {xl}}}"


class D2(_Printed, sp.Function):
  r"""Unevaluated second partial :math:`\partial^2 f / \partial x \partial w`."""

  nargs = 3

  def _latex_body(self, printer):
    f, x, w = (printer._print(e) for e in self.args)
    return rf"\frac{{\partial^2 {f}}}{{\partial {x}\,\partial {w}}}"


class SumNe(Display):
  r"""``SumNe(body, j, i)``: :math:`\sum_{j \neq i} \mathrm{body}` over 1..n."""

  nargs = 3

  def _latex_body(self, printer):
    body, jj, ii = self.args
    b = printer._print(body)
    if isinstance(body, sp.Add | Terms) or b.lstrip().startswith("-"):
      b = rf"\left({b}\right)"
    return rf"\sum_{{{printer._print(jj)} \neq {printer._print(ii)}}} {b}"

  def plain(self):
    body, jj, ii = self.args
    return sp.Sum(body * (1 - sp.KroneckerDelta(ii, jj)), (jj, 1, n))


class Named(_Printed, sp.Function):
  r"""A name printed as given, with arguments, e.g. :math:`\mathrm{lse}(z)`.

  ``Named(latex, *args)`` is replaced by its definition when the context has
  one under the key ``latex``; otherwise it stays an opaque symbol.
  """

  def _latex(self, printer, exp=None):
    name = self.args[0].name
    if exp is not None:
      name = f"{name}^{{{exp}}}"
    if len(self.args) == 1:
      return name
    args = ", ".join(printer._print(e) for e in self.args[1:])
    return rf"{name}\left({args}\right)"


def named(latex: str, *args: sp.Basic) -> sp.Expr:
  return Named(sp.Symbol(latex), *args)


def _group(printer, e: sp.Basic, first: bool = False) -> str:
  """LaTeX of a factor, parenthesised when it is a sum or (unless first) negative."""
  s = printer._print(e)
  if isinstance(e, sp.UnevaluatedExpr):
    e = e.args[0]
  if isinstance(e, sp.Add | Terms) or (not first and s.lstrip().startswith("-")):
    return rf"\left({s}\right)"
  return s


class Prod(Display):
  r"""A product kept as written, printed with :math:`\cdot`."""

  def _latex_body(self, printer):
    return r" \cdot ".join(
      _group(printer, e, first=(r == 0)) for r, e in enumerate(self.args)
    )

  def plain(self):
    return sp.Mul(*self.args)


class Terms(Display):
  """A sum kept in the order written."""

  def _latex_body(self, printer):
    out = ""
    for r, e in enumerate(self.args):
      s = printer._print(e)
      if r == 0:
        out = s
      elif s.lstrip().startswith("-"):
        out += " - " + s.lstrip()[1:].lstrip()
      else:
        out += " + " + s
    return out

  def plain(self):
    return sp.Add(*self.args)


class Diag(Display):
  r"""Display node :math:`\operatorname{diag}(v)` for matrix-form steps."""

  def _latex_body(self, printer):
    return rf"\operatorname{{diag}}\left({printer._print(self.args[0])}\right)"


class Transpose(Display):
  r"""Display node :math:`v^{\mathsf T}`."""

  def _latex_body(self, printer):
    return rf"{printer._print(self.args[0])}^{{\mathsf{{T}}}}"


class Dot(Display):
  r"""Display node for a product of vectors/matrices, printed juxtaposed."""

  def _latex_body(self, printer):
    return " ".join(_group(printer, e, first=(r == 0)) for r, e in enumerate(self.args))

  def plain(self):
    return sp.Mul(*self.args)


class Group(Display):
  r"""Parentheses for display: :math:`\left(x\right)`."""

  def _latex_body(self, printer):
    return rf"\left({printer._print(self.args[0])}\right)"

  def plain(self):
    return self.args[0]


class Chain(Display):
  r"""A chain of equalities :math:`e_1 = e_2 = \dots`; each link is checked."""

  def _latex_body(self, printer):
    return " = ".join(printer._print(e) for e in self.args)


class Ordered(Display):
  r"""A chain of strict inequalities :math:`e_1 < e_2 < \dots`."""

  def _latex_body(self, printer):
    return " < ".join(printer._print(e) for e in self.args)


class Label(_Printed, sp.Function):
  r"""A name for the quantity a chain computes, e.g. :math:`\bar z_i`.

  A label has no definition, so checks skip it: ``Label(r"\bar{z}_{i}")``.
  """

  def _latex_body(self, printer):
    return self.args[0].name


def label(latex: str) -> sp.Expr:
  return Label(sp.Symbol(latex))


class At(_Printed, sp.Function):
  r"""``At(expr, Tuple((old, new), ...))``: :math:`\left.expr\right|_{old=new}`.

  Evaluated after the derivatives inside ``expr``, so
  :math:`\partial \mathcal{L}/\partial q_i` at :math:`q = p` differentiates
  first and substitutes second.
  """

  def _latex_body(self, printer):
    expr, pairs = self.args
    at = r",\ ".join(f"{printer._print(o)} = {printer._print(v)}" for o, v in pairs)
    return rf"\left. {printer._print(expr)} \right|_{{{at}}}"


def at(expr: sp.Expr, *pairs: tuple[Any, Any]) -> sp.Expr:
  return At(expr, sp.Tuple(*[sp.Tuple(o, v) for o, v in pairs]))


def eq(lhs: Any, rhs: Any) -> sp.Eq:
  """An unevaluated equation, for display."""
  return sp.Eq(sp.sympify(lhs), sp.sympify(rhs), evaluate=False)


def keep(expr: Any) -> sp.UnevaluatedExpr:
  """Keeps ``expr`` as written in the display (evaluation unwraps it)."""
  return sp.UnevaluatedExpr(expr)


def outcome(ok: bool) -> str:
  """A check's outcome, in words: every font draws them (an emoji check mark
  shows as an empty box on a machine without an emoji font)."""
  return "pass" if ok else "FAIL"
