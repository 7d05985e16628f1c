"""Contexts, evaluation and the sum-closing algebra (general and concrete n)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy as sp

from ._display import (
  D2,
  At,
  D,
  Display,
  Named,
)
from ._symbols import (
  mask,
  n,
)

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
