r"""Masks as mathematics: ``where`` as an indexed mask :math:`m_i \in \{0, 1\}`.

Every jaxsmx function takes ``where``, and masking means slicing: the masked
classes are left out. Written with a mask :math:`m` (so :math:`m_i^2 = m_i`,
which the normal form applies), the masked softmax is
:math:`a_i = m_i e^{z_i} / \sum_k m_k e^{z_k}`; each step below derives a
masked closed form for symbolic :math:`n`, and a second check shows that it
reduces to the unmasked one when every :math:`m_i = 1`.
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from .engine import (
  Check,
  Concrete,
  Context,
  D,
  Derivation,
  Dot,
  General,
  Step,
  Terms,
  Verdict,
  a,
  ell,
  eq,
  evaluate,
  i,
  is_zero,
  j,
  k,
  mask,
  n,
  normal_form,
  summation,
  vec,
  y,
  z,
)

m = mask
delta = sp.KroneckerDelta
alpha = sp.Symbol(r"\alpha", nonnegative=True)
gs = sp.Symbol("g", real=True)
H = sp.Symbol("H")
C = sp.Symbol("C")
Cm = sp.Symbol(r"C_m")  # the number of kept classes
ls = sp.IndexedBase(r"\lambda")  # the masked log-softmax
yt = sp.IndexedBase(r"\tilde{y}", real=True)  # smoothed over the kept classes
_r = sp.Symbol("r", integer=True, positive=True)  # the normaliser's dummy
S_M = sp.Sum(m[_r] * sp.exp(z[_r]), (_r, 1, n))
SHOWN = summation(m[k] * sp.exp(z[k]))  # the same, as displayed

MASK_CTX = Context(
  {
    a: lambda idx: m[idx] * sp.exp(z[idx]) / S_M,
    ls: lambda idx: z[idx] - sp.log(S_M),
    H: -summation(a[k] * (z[k] - sp.log(S_M))),
    C: -summation(m[k] * y[k] * (z[k] - sp.log(S_M))),
    Cm: summation(m[k]),
    yt: lambda c: (1 - alpha) * delta(c, ell) + alpha * m[c] / summation(m[k]),
  },
  "a_i = m_i e^{z_i} / Σ m_k e^{z_k}",
)

UNMASKED = Context(
  {
    a: lambda idx: sp.exp(z[idx]) / sp.Sum(sp.exp(z[_r]), (_r, 1, n)),
  }
)


@dataclasses.dataclass(frozen=True)
class AllKept(Check):
  """With every :math:`m_k = 1` the masked result equals ``unmasked``.

  ``unmasked`` is the plain closed form, under the plain softmax.
  """

  unmasked: sp.Expr

  def run(self, step, ctx):
    method = "all m = 1 gives the unmasked form"
    rhs = evaluate(step.formula, ctx)
    ones = rhs.replace(lambda e: isinstance(e, sp.Indexed) and e.base == m, lambda e: 1)
    want = evaluate(self.unmasked, UNMASKED)
    diff = ones - want
    if is_zero(diff):
      return Verdict(True, method)
    return Verdict(False, method, f"residual {sp.sstr(normal_form(diff))}"[:300])


def _pattern(size: int) -> dict:
  """A concrete mask for n = size: class 2 (and every third after) masked."""
  return {s: (0 if r % 3 == 1 else 1) for r, s in enumerate(vec(m, size))}


def _masked_softmax(size: int) -> sp.Matrix:
  ms = [_pattern(size)[s] for s in vec(m, size)]
  zs = vec(z, size)
  total = sum(mv * sp.exp(x) for mv, x in zip(ms, zs, strict=True))
  return sp.Matrix([mv * sp.exp(x) / total for mv, x in zip(ms, zs, strict=True)])


def _masked_jacobian(size: int) -> sp.Matrix:
  return _masked_softmax(size).jacobian(vec(z, size))


def masks_derivation() -> Derivation:
  jac = Dot(a[i], Terms(Dot(m[j], delta(i, j)), -a[j]))
  sm_sum = summation(m[k] * y[k])
  steps = (
    Step(
      "The softmax over the kept classes; $m_i = 0$ gives $a_i = 0$.",
      eq(a[i], m[i] * sp.exp(z[i]) / SHOWN),
      role="definition",
      name="definition",
    ),
    Step(
      "Its Jacobian: the unmasked one with $\\delta_{ij}$ restricted to kept "
      "classes ($a_i \\delta_{ij} = a_i m_j \\delta_{ij}$, as $m_i^2 = m_i$).",
      eq(D(a[i], z[j]), jac),
      (
        General(why="m² = m"),
        Concrete(
          _masked_jacobian,
          (i, j),
          sizes=tuple(range(1, 7)),
          extra=_pattern,
          what="Matrix.jacobian, m = 1,0,1,1,0,…",
        ),
        AllKept(Dot(a[i], Terms(delta(i, j), -a[j]))),
      ),
      name="jacobian",
      role="result",
    ),
    Step(
      "The VJP of the masked softmax: the unmasked rule, because "
      "$a_j = 0$ where $m_j = 0$.",
      eq(
        summation(Dot(g_[k], D(a[k], z[j])), k),
        Dot(a[j], Terms(g_[j], -summation(g_[k] * a[k]))),
      ),
      (
        General(why="m² = m"),
        Concrete(
          lambda size: _masked_jacobian(size).T * sp.Matrix(vec(g_, size)),
          (j,),
          sizes=tuple(range(1, 7)),
          extra=_pattern,
          what="Matrix.jacobian(...).T g, m = 1,0,1,1,0,…",
        ),
      ),
      name="vjp",
      role="vjp",
    ),
    Step(
      "The masked log-softmax of a kept class $i$, "
      "$\\lambda_i = z_i - \\log \\sum_k m_k e^{z_k}$; its Jacobian.",
      eq(D(ls[i], z[j]), Terms(delta(i, j), -a[j])),
      (General(), AllKept(Terms(delta(i, j), -a[j]))),
      name="log_softmax",
      role="result",
    ),
    Step(
      "The masked entropy $H = -\\sum_k a_k \\lambda_k$ (a masked term is 0: "
      "$a_k = 0$); its gradient is the unmasked one.",
      eq(D(H, z[i]), -Dot(a[i], Terms(z[i] - sp.log(SHOWN), H))),
      (
        General(why="m² = m"),
        AllKept(-Dot(a[i], Terms(z[i] - sp.log(summation(sp.exp(z[k]))), H_plain()))),
      ),
      name="entropy",
      role="result",
    ),
    Step(
      "The masked cross-entropy $C = -\\sum_k m_k y_k \\lambda_k$: label mass "
      "on masked classes is dropped.",
      eq(D(C, z[i]), Terms(Dot(a[i], sm_sum), -Dot(m[i], y[i]))),
      (
        General(why="m² = m"),
        AllKept(Terms(Dot(a[i], summation(y[k])), -y[i])),
      ),
      name="cross_entropy",
      role="result",
    ),
    Step(
      "Label smoothing over the $C_m = \\sum_k m_k$ kept classes: "
      "$\\tilde y_k = (1-\\alpha)\\delta_{k\\ell} + \\alpha m_k / C_m$ sums to "
      "one when the label is kept ($m_\\ell = 1$).",
      eq(summation(m[k] * yt[k]), 1),
      (General(((m[ell], 1),), "m_ℓ = 1"),),
      name="smoothing_sum",
    ),
    Step(
      "So the smoothed gradient spreads $\\alpha$ over the kept classes "
      "only; with every $m_k = 1$, $C_m = n$ and it is the unmasked rule.",
      eq(
        Terms(Dot(a[i], summation(m[k] * yt[k])), -Dot(m[i], yt[i])),
        Terms(a[i], -Dot(1 - alpha, delta(i, ell)), -alpha * m[i] / Cm),
      ),
      (
        General(((m[ell], 1), (m[i] * delta(i, ell), delta(i, ell))), "m_ℓ = 1"),
        AllKept(Terms(a[i], -Dot(1 - alpha, delta(i, ell)), -alpha / n)),
      ),
      name="smoothing",
      role="result",
    ),
  )
  return Derivation(
    key="masks",
    title="Masks",
    functions=(
      "softmax",
      "log_softmax",
      "softmax_entropy",
      "softmax_cross_entropy",
      "softmax_cross_entropy_with_integer_labels",
    ),
    intro=(
      "`where` as mathematics: an indexed mask $m_i \\in \\{0, 1\\}$ "
      "($m_i^2 = m_i$). Each masked closed form is derived for symbolic $n$ "
      "and shown to reduce to the unmasked one when every $m_i = 1$; the "
      "option tables below compare jaxsmx with masks numerically."
    ),
    ctx=MASK_CTX,
    steps=steps,
    headline=eq(D(a[i], z[j]), jac),
  )


g_ = sp.IndexedBase("g", real=True)


def H_plain() -> sp.Expr:
  lse = sp.log(summation(sp.exp(z[k])))
  return -summation(sp.exp(z[k]) / summation(sp.exp(z[j]), j) * (z[k] - lse))


def derivations() -> tuple[Derivation, ...]:
  return (masks_derivation(),)
