r"""Derivations as data: steps, checks and the symbolic machinery behind them.

A :class:`Derivation` is an ordered tuple of :class:`Step` objects. Each step
holds a label (Markdown prose), a SymPy expression, usually an unevaluated
``Eq(lhs, rhs)``, and the checks that prove it. The expressions are written
the way a person writes them on paper, with a few display nodes:

* :class:`D` is a partial derivative :math:`\partial f / \partial x`;
* :class:`SumNe` is a sum over :math:`j \neq i`, as in the article;
* :class:`UnevaluatedExpr` keeps a product such as
  :math:`-\frac{y_i}{a_i} \cdot a_i (1 - a_i)` from being simplified away.

To check a step, both sides are *evaluated*: the definitions in the step's
:class:`Context` are substituted (``a_i`` becomes
:math:`e^{z_i} / \sum_k e^{z_k}`), every :class:`D` becomes a real
``sympy.diff``, and :class:`SumNe` becomes a sum with a
:math:`(1 - \delta_{ij})` factor. The difference is then brought to a normal
form and compared with zero.

SymPy's ``simplify`` does not close sums such as
:math:`\sum_k \delta_{ik} e^{z_k}` (``doit`` gives a ``Piecewise`` on the
range of :math:`i`), so :func:`close_sums` does the targeted rewriting:
expand the summand, split sums over ``Add``, pull factors that do not depend
on the summation index out of the sum, and resolve Kronecker deltas against
the summation index. Free indices are taken to lie in :math:`1 \dots n`.

For concrete :math:`n`, :func:`specialise` turns a general-:math:`n`
expression into one over plain symbols :math:`z_1 \dots z_n`, to compare with
``Matrix.jacobian`` of the explicit function.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy as sp

# ---------------------------------------------------------------------------
# Symbols shared by every derivation.

n = sp.Symbol("n", integer=True, positive=True)
i, j, k, ell = sp.symbols("i j k ell", integer=True, positive=True)
# Class indices run over 1..n; ell is the integer label.

z = sp.IndexedBase("z", real=True)  # logits
u = sp.IndexedBase("u", real=True)  # logits before the soft cap
a = sp.IndexedBase("a", positive=True)  # softmax(z)
y = sp.IndexedBase("y", real=True)  # targets / labels
g = sp.IndexedBase("g", real=True)  # incoming cotangent (vector)
p = sp.IndexedBase("p", positive=True)  # probabilities
q = sp.IndexedBase("q", positive=True)  # predicted probabilities
t = sp.IndexedBase("t", positive=True)  # KL targets
lp = sp.IndexedBase(r"\ell", real=True)  # KL log-predictions
mask = sp.IndexedBase("m", nonnegative=True)  # a mask, m_i in {0, 1}

# The dummy index of the normaliser sum, used nowhere else, so that an
# a_k inside a sum over k never captures it.
_m = sp.Symbol("m", integer=True, positive=True)
SUM_EXP_Z = sp.Sum(sp.exp(z[_m]), (_m, 1, n))


def softmax_of(base: sp.IndexedBase) -> Callable[[Any], sp.Expr]:
  """``idx -> exp(base[idx]) / sum_m exp(base[m])`` with the shared dummy."""
  total = sp.Sum(sp.exp(base[_m]), (_m, 1, n))
  return lambda idx: sp.exp(base[idx]) / total


def summation(body: sp.Expr, index: sp.Symbol = k) -> sp.Expr:
  """``sum_{index=1}^{n} body``."""
  return sp.Sum(body, (index, 1, n))


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


# ---------------------------------------------------------------------------
# Contexts: the definitions a derivation works under.

Definition = sp.Expr | Callable[..., sp.Expr]


@dataclasses.dataclass(frozen=True)
class Context:
  """The definitions of the names a derivation uses.

  Attributes:
    defs: maps an ``IndexedBase`` to ``idx -> expr``, a ``Symbol`` to an
      expression, or a :class:`Named` name (its LaTeX string) to
      ``*args -> expr``.
    note: one sentence for the report, e.g. "a = softmax(z)".
  """

  defs: Mapping[Any, Definition]
  note: str = ""

  def substitute(self, expr: sp.Expr, hold: frozenset = frozenset()) -> sp.Expr:
    """Replaces defined names by their definitions, to a fixed point."""
    for _ in range(12):
      new = self._substitute_once(expr, hold)
      if new == expr:
        return new
      expr = new
    raise RecursionError(f"definitions do not terminate: {expr}")

  def _substitute_once(self, expr, hold):
    def is_defined(e):
      if isinstance(e, sp.Indexed):
        return e.base in self.defs and e.base not in hold
      if isinstance(e, sp.Symbol):
        return e in self.defs and e not in hold
      if isinstance(e, Named):
        key = e.args[0].name
        return key in self.defs and key not in hold
      return False

    def definition(e):
      if isinstance(e, sp.Indexed):
        return self.defs[e.base](*e.indices)
      if isinstance(e, Named):
        return self.defs[e.args[0].name](*e.args[1:])
      return self.defs[e]

    def walk(e):
      # Does not descend into an IndexedBase: its label is not a use of a
      # symbol of the same name.
      if is_defined(e):
        return definition(e)
      if not e.args or isinstance(e, sp.IndexedBase):
        return e
      return e.func(*[walk(x) for x in e.args])

    return walk(expr)


def _held_key(x: sp.Basic):
  if isinstance(x, sp.Indexed):
    return x.base
  return x


def evaluate(expr: sp.Basic, ctx: Context) -> sp.Basic:
  """Turns a display expression into a plain SymPy expression.

  Unwraps :class:`~sympy.UnevaluatedExpr`, turns :class:`SumNe` into a sum
  with a :math:`(1 - \\delta)` factor, differentiates every :class:`D` and
  :class:`D2` (innermost first) and substitutes the context's definitions.
  """
  expr = expr.replace(lambda e: isinstance(e, sp.UnevaluatedExpr), lambda e: e.args[0])
  expr = expr.replace(lambda e: isinstance(e, Display), lambda e: e.plain())

  def derivative(node):
    if isinstance(node, D):
      f, x = node.args
      hold = frozenset({_held_key(x)})
      return sp.diff(ctx.substitute(f, hold), x)
    f, x, w = node.args
    hold = frozenset({_held_key(x), _held_key(w)})
    return sp.diff(ctx.substitute(f, hold), x, w)

  # Bottom-up: replace() visits the innermost D nodes first.
  expr = expr.replace(lambda e: isinstance(e, D | D2), derivative)
  expr = expr.replace(
    lambda e: isinstance(e, At),
    lambda e: e.args[0].xreplace({o: v for o, v in e.args[1]}),
  )
  return ctx.substitute(expr)


# ---------------------------------------------------------------------------
# Normal form for general n: closing sums over Kronecker deltas.


def _close_one_sum(s: sp.Sum) -> sp.Expr:
  """Rewrites one single-index ``Sum`` whose body has no unclosed sums."""
  if len(s.limits) != 1:
    inner = sp.Sum(s.function, *s.limits[:-1])
    return _close_one_sum(sp.Sum(_close_one_sum(inner), s.limits[-1]))
  idx, lo, hi = s.limits[0]
  body = sp.expand(sp.expand_log(s.function, force=True))
  out = []
  for term in sp.Add.make_args(body):
    const, dep = term.as_independent(idx, as_Add=False)
    if dep == 1:
      out.append(const * (hi - lo + 1))
      continue
    factors = list(sp.Mul.make_args(dep))
    delta = None
    for f in factors:
      base = f.base if isinstance(f, sp.Pow) and f.exp.is_positive else f
      if isinstance(base, sp.KroneckerDelta) and idx in base.free_symbols:
        delta = f
        break
    if delta is None:
      out.append(const * sp.Sum(dep, (idx, lo, hi)))
      continue
    kd = delta.base if isinstance(delta, sp.Pow) else delta
    other = kd.args[1] if kd.args[0] == idx else kd.args[0]
    if idx in other.free_symbols:  # delta(k, k + 1) and the like
      out.append(const * sp.Sum(dep, (idx, lo, hi)))
      continue
    rest = sp.Mul(*[f for f in factors if f is not delta])
    # The free index `other` is assumed to lie in lo..hi.
    out.append(const * rest.subs(idx, other))
  return sp.Add(*out)


def close_sums(expr: sp.Basic) -> sp.Basic:
  """Closes every ``Sum`` in ``expr`` as far as Kronecker deltas allow."""
  for _ in range(20):
    new = expr.replace(lambda e: isinstance(e, sp.Sum), _close_one_sum)
    if new == expr:
      return new
    expr = new
  return expr


def canonical_dummies(expr: sp.Basic, depth: int = 0) -> sp.Basic:
  """Renames each sum's bound index by its nesting depth.

  ``Sum(f(j), (j, 1, n))`` and ``Sum(f(k), (k, 1, n))`` are then the same
  object, so that they cancel.
  """
  if isinstance(expr, sp.Sum):
    body = canonical_dummies(expr.function, depth + len(expr.limits))
    limits = []
    mapping = {}
    for d, (idx, lo, hi) in enumerate(expr.limits):
      new = sp.Symbol(f"s{depth + d}_", integer=True, positive=True)
      mapping[idx] = new
      limits.append((new, canonical_dummies(lo, depth), canonical_dummies(hi, depth)))
    return sp.Sum(body.xreplace(mapping), *limits)
  if not expr.args or isinstance(expr, sp.Indexed | sp.IndexedBase):
    return expr
  return expr.func(*[canonical_dummies(e, depth) for e in expr.args])


Assumption = tuple[sp.Expr, sp.Expr]


def _merge_deltas(expr: sp.Expr) -> sp.Expr:
  """In each term ``delta(i, j) f(i, j)``, writes ``f`` with one index only.

  The term is zero unless ``i = j``, so ``f(i, j)`` may be replaced by
  ``f(i, i)``; the index kept is the first in SymPy's sort order.
  """
  for _ in range(8):
    out = []
    for term in sp.Add.make_args(expr):
      factors = sp.Mul.make_args(term)
      deltas = [
        f
        for f in factors
        if isinstance(f, sp.KroneckerDelta) and all(x.is_Symbol for x in f.args)
      ]
      if not deltas:
        out.append(term)
        continue
      d = deltas[0]
      keep_, drop = sorted(d.args, key=sp.default_sort_key)
      rest = sp.Mul(*[f for f in factors if f is not d])
      out.append(d * rest.subs(drop, keep_))
    new = sp.expand(sp.Add(*out))
    if new == expr:
      return new
    expr = new
  return expr


def _together_in_logs(expr: sp.Expr) -> sp.Expr:
  """``log(1 - 1/(1 + e^{-z}))`` as ``log(e^{-z}/(1 + e^{-z}))``."""
  return expr.replace(
    lambda e: isinstance(e, sp.log) and not e.args[0].has(sp.Sum),
    lambda e: sp.log(sp.together(e.args[0])),
  )


def normal_form(expr: sp.Expr, assume: Sequence[Assumption] = ()) -> sp.Expr:
  r"""A normal form under which equal expressions become the same object.

  Expands logs of products (:math:`\log(e^{z}/S) = z - \log S`), closes the
  sums, names bound indices canonically, applies the assumptions (pairs
  ``(old, new)``, themselves normalised), reduces to a single expanded
  numerator over a common denominator and lets each free Kronecker delta
  identify its two indices in the rest of its term.
  """
  assume = [(canonical_dummies(close_sums(sp.expand(old))), new) for old, new in assume]

  def apply(e):
    for old, new in assume:
      e = e.xreplace({old: new})
    return _idempotent(e)

  expr = sp.expand_log(sp.expand(_together_in_logs(expr)), force=True)
  expr = apply(canonical_dummies(close_sums(expr)))
  num, _ = sp.fraction(sp.together(expr))
  num = apply(canonical_dummies(close_sums(sp.expand(num))))
  num = apply(_merge_deltas(sp.expand(num)))
  return apply(sp.expand(num))


def _idempotent(e: sp.Expr) -> sp.Expr:
  """``m_i^k = m_i``: a mask takes the values 0 and 1 only."""
  return e.replace(
    lambda x: (
      isinstance(x, sp.Pow)
      and isinstance(x.base, sp.Indexed)
      and x.base.base == mask
      and x.exp.is_Integer
      and x.exp > 1
    ),
    lambda x: x.base,
  )


def is_zero(expr: sp.Expr, assume: Sequence[Assumption] = ()) -> bool:
  """True when ``expr`` normalises to 0.

  Never a false positive. It can be a false negative for identities that need
  more than the normal form (none of the derivations here do); then the check
  fails and says so, rather than calling ``simplify``, which can take minutes
  on a wrong formula.
  """
  return normal_form(expr, assume) == 0


# ---------------------------------------------------------------------------
# Concrete n.


def vec(base: sp.IndexedBase, size: int) -> list[sp.Symbol]:
  """Plain symbols base1..base<size> with the assumptions of ``base``."""
  assumptions = base.label.assumptions0
  name = base.label.name
  return [sp.Symbol(f"{name}{r}", **assumptions) for r in range(1, size + 1)]


def concretize(expr: sp.Basic) -> sp.Basic:
  """Replaces ``base[<int>]`` by the plain symbol of :func:`vec`."""

  def plain(e):
    (idx,) = e.indices
    assumptions = e.base.label.assumptions0
    return sp.Symbol(f"{e.base.label.name}{int(idx)}", **assumptions)

  return expr.replace(
    lambda e: (
      isinstance(e, sp.Indexed) and len(e.indices) == 1 and e.indices[0].is_Integer
    ),
    plain,
  )


def expand_finite_sums(expr: sp.Basic) -> sp.Basic:
  """Writes out every ``Sum`` whose limits are integers, innermost first.

  Much cheaper than ``doit``, which re-evaluates the whole tree.
  """

  def write_out(s):
    body = s.function
    for idx, lo, hi in reversed(s.limits):
      body = sp.Add(
        *[body.xreplace({idx: sp.Integer(v)}) for v in range(int(lo), int(hi) + 1)]
      )
    return body

  return expr.replace(
    lambda e: (
      isinstance(e, sp.Sum)
      and all(lo.is_Integer and hi.is_Integer for _, lo, hi in e.limits)
    ),
    write_out,
  )


def specialise_matrix(
  entry: sp.Expr,
  ctx: Context,
  size: int,
  index: Sequence[sp.Symbol],
  extra: Mapping[sp.Symbol, int] | None = None,
) -> sp.Matrix:
  """The general-n ``entry`` at ``n = size``, as a ``Matrix`` over ``index``.

  One index gives a column vector, two a square matrix. The sums are written
  out, the free indices set to 1..size (Kronecker deltas then evaluate) and
  ``z[3]`` becomes the plain symbol ``z3`` of :func:`vec`.
  """
  key = (
    entry,
    tuple(ctx.defs.items()),
    size,
    tuple(index),
    tuple(sorted((extra or {}).items(), key=str)),
  )
  if key in _SPECIALISED:
    return _SPECIALISED[key]
  if len(_SPECIALISED) > 1024:
    _SPECIALISED.clear()
  _SPECIALISED[key] = out = _specialise_matrix(entry, ctx, size, index, extra)
  return out


# Within one process the Concrete checks and the numeric checks specialise the
# same formulas at the same sizes; the key holds the definitions themselves, so
# an entry can never be confused with another derivation's. Nothing persists.
_SPECIALISED: dict = {}


def _specialise_matrix(entry, ctx, size, index, extra):
  values = {n: sp.Integer(size), **{s: sp.Integer(v) for s, v in (extra or {}).items()}}
  e = expand_finite_sums(evaluate(entry, ctx).xreplace(values))
  rng = range(1, size + 1)
  if len(index) == 1:
    cells = [[{index[0]: r}] for r in rng]
  else:
    cells = [[{index[0]: r, index[1]: c} for c in rng] for r in rng]
  # plain symbols among the extra values (a concrete mask m1, m2, ...) are set
  # once the indexed entries have become plain symbols
  return sp.Matrix([[_fill(e, cell).xreplace(values) for cell in row] for row in cells])


def _fill(e: sp.Expr, values: Mapping[sp.Symbol, int]) -> sp.Expr:
  e = e.xreplace({s: sp.Integer(v) for s, v in values.items()})
  plain = {
    x: sp.Symbol(f"{x.base.label.name}{int(x.indices[0])}", **x.base.label.assumptions0)
    for x in e.atoms(sp.Indexed)
    if len(x.indices) == 1 and x.indices[0].is_Integer
  }
  return e.xreplace(plain)


def concrete_zero(expr: sp.Expr) -> bool:
  """Zero test for explicit (concrete-n) expressions.

  Logs of products are expanded; then every ``exp(c1 x1 + c2 x2)`` becomes
  ``X1**c1 * X2**c2`` and every ``log`` a fresh symbol, leaving a rational
  function. The atoms (``exp(z_k)``, ``z_k``, ``log`` of a sum, ``tanh``) are
  algebraically independent, so a numerator that does not expand to 0 is a
  real difference.
  """
  if expr == 0:
    return True
  logs = sorted(expr.atoms(sp.log), key=sp.default_sort_key)
  e = expr.xreplace(
    {x: sp.expand_log(sp.log(sp.together(x.args[0])), force=True) for x in logs}
  )
  fresh: dict[sp.Expr, sp.Symbol] = {}

  def symbol_for(atom):
    if atom not in fresh:
      fresh[atom] = sp.Symbol(f"_X{len(fresh)}", positive=True)
    return fresh[atom]

  exps = sorted(e.atoms(sp.exp), key=sp.default_sort_key)
  mapping = {}
  for x in exps:
    out = sp.Integer(1)
    for term in sp.Add.make_args(sp.expand(x.args[0])):
      coeff, rest = term.as_coeff_Mul()
      if not coeff.is_Rational or rest == 1:
        coeff, rest = sp.Integer(1), term
      out *= symbol_for(sp.exp(rest)) ** coeff
    mapping[x] = out
  e = e.xreplace(mapping)
  logs = sorted(e.atoms(sp.log), key=sp.default_sort_key)
  e = e.xreplace({x: symbol_for(x) for x in logs})
  # Sums of exponentials (softmax normalisers) become symbols too, so that the
  # common denominator stays small; the relation S = X_1 + ... + X_m is put
  # back at the end by eliminating X_m.
  relations = {}
  for add in sorted(e.atoms(sp.Add), key=sp.default_sort_key):
    terms = add.args
    if len(terms) > 1 and all(x in fresh.values() for x in terms):
      total = sp.Symbol(f"_S{len(relations)}", positive=True)
      relations[add] = total
  e = e.xreplace(relations)
  num, _ = sp.fraction(sp.together(e))
  num = sp.expand(num)
  if num == 0:
    return True
  for add, total in relations.items():
    last = max(add.args, key=sp.default_sort_key)
    num = sp.expand(num.xreplace({last: total - (add - last)}))
  return num == 0


# ---------------------------------------------------------------------------
# Checks.


@dataclasses.dataclass(frozen=True)
class Verdict:
  ok: bool
  method: str  # how it was checked, one short phrase for the report
  detail: str = ""  # why it failed


class Check:
  """Something that proves (part of) a step. Subclasses implement run()."""

  def run(self, step: Step, ctx: Context) -> Verdict:
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
    _, rhs = _sides(step.expr)
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
    lhs, rhs = _sides(step.expr)
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


def _sides(expr: sp.Basic) -> tuple[sp.Expr, sp.Expr]:
  m = members(expr)
  return m[0], m[-1]


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
  """

  label: str
  expr: sp.Basic
  checks: tuple[Check, ...] = ()
  ctx: Context | None = None
  name: str = ""
  role: str = "step"
  tag: str = ""

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


@dataclasses.dataclass(frozen=True)
class Defines(Check):
  """A definition step shows the very definition the checks substitute.

  The displayed right-hand side, evaluated, must equal the context's
  definition of the left-hand side for general n; a definition displayed one
  way and used another (softmax with :math:`e^{-z_i}` on screen) fails.
  """

  def run(self, step, ctx):
    lhs, rhs = _sides(step.expr)
    diff = evaluate(lhs, ctx) - evaluate(rhs, ctx)
    method = "displayed = the definition the checks use"
    if is_zero(diff):
      return Verdict(True, method)
    return Verdict(False, method, f"residual {sp.sstr(normal_form(diff))}"[:300])


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


# ---------------------------------------------------------------------------
# Explicit concrete-n objects, the references of the Concrete checks.


def explicit_softmax(size: int, base: sp.IndexedBase = z) -> sp.Matrix:
  """Column vector softmax(base1..base<size>) in plain symbols."""
  xs = vec(base, size)
  total = sum(sp.exp(x) for x in xs)
  return sp.Matrix([sp.exp(x) / total for x in xs])


def gradient(f: sp.Expr, xs: Sequence[sp.Symbol]) -> sp.Matrix:
  """Column gradient of a scalar, via ``Matrix.jacobian``."""
  return sp.Matrix([f]).jacobian(list(xs)).T


@functools.cache
def jacobian_of(fn: Callable[[int], Any], wrt: sp.IndexedBase, size: int) -> sp.Matrix:
  """``Matrix.jacobian`` of an explicit function at size n (memoised per process).

  ``fn(size)`` returns a scalar expression or a column ``Matrix`` of outputs
  in the plain symbols of :func:`vec`.
  """
  out = fn(size)
  if not isinstance(out, sp.MatrixBase):
    out = sp.Matrix([out])
  return out.jacobian(vec(wrt, size))


def gradient_ref(
  fn: Callable[[int], Any], wrt: sp.IndexedBase
) -> Callable[[int], sp.Matrix]:
  """Reference for a Concrete check: the gradient of a scalar function."""
  return lambda size: jacobian_of(fn, wrt, size).T


VJP_SIZES = tuple(range(1, 7))


def vjp_check(
  fn: Callable[[int], Any],
  wrt: sp.IndexedBase,
  cotangent: sp.Basic,
  index: tuple[sp.Symbol, ...] = (i,),
  **kwargs,
) -> Concrete:
  """Concrete check of a VJP step: :math:`J^{\\mathsf T} g` from ``Matrix.jacobian``.

  ``cotangent`` is a scalar ``Symbol`` (a loss per example) or an
  ``IndexedBase`` (one cotangent per output).
  """

  def reference(size):
    jac = jacobian_of(fn, wrt, size)
    if isinstance(cotangent, sp.IndexedBase):
      cot = sp.Matrix(vec(cotangent, size))
    else:
      cot = sp.Matrix([cotangent])
    return jac.T * cot

  kwargs.setdefault("sizes", VJP_SIZES)
  kwargs.setdefault("what", "Matrix.jacobian(...).T g")
  return Concrete(reference, index, **kwargs)
