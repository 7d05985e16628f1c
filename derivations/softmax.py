r"""Softmax, log-softmax and logsumexp: Jacobians, Hessian and VJPs."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import (
  CLASSES,
  ROWS,
  Case,
  Problem,
  class_mask,
  cotangent,
  logits,
  row_mask,
  term,
  with_dtypes,
)
from .agreement.numeric import (
  COTANGENT,
  LOGITS,
  POSITIVE,
  AgreesWithJax,
  Numeric,
  by_grad,
  by_hessian,
  by_jacrev,
  by_vjp,
)
from .engine import (
  D2,
  Chain,
  Concrete,
  Context,
  D,
  Derivation,
  Diag,
  Dot,
  Example,
  Explicit,
  General,
  Prod,
  Step,
  Terms,
  Transpose,
  a,
  concrete_zero,
  eq,
  explicit_softmax,
  g,
  gradient_ref,
  i,
  j,
  k,
  label,
  named,
  softmax_of,
  summation,
  vec,
  vjp_check,
  z,
)

delta = sp.KroneckerDelta
NE = ((delta(i, j), 0),)  # the case i != j
S = summation(sp.exp(z[k]))  # the normaliser, as displayed
LSE = r"\operatorname{lse}"
gs = sp.Symbol("g", real=True)  # a scalar cotangent

SOFTMAX_CTX = Context(
  {a: softmax_of(z), LSE: lambda base: sp.log(summation(sp.exp(base[k])))},
  "a = softmax(z)",
)


def softmax_jacobian_ref(size: int) -> sp.Matrix:
  return explicit_softmax(size).jacobian(vec(z, size))


def _matrix_form_holds() -> bool:
  for size in range(1, 9):
    av = explicit_softmax(size)
    form = sp.diag(*av) - av * av.T
    diff = softmax_jacobian_ref(size) - form
    if not all(concrete_zero(e) for e in diff):
      return False
  return True


def _softmax_vjp_ref(size: int) -> sp.Matrix:
  return softmax_jacobian_ref(size).T * sp.Matrix(vec(g, size))


def softmax_derivation() -> Derivation:
  bar_z = label(r"\bar{z}_{i}")
  e_i, e_j = sp.exp(z[i]), sp.exp(z[j])
  quotient_ii = Terms(Prod(e_i, S), -Prod(e_i, e_i)) / S**2
  quotient_ij = Terms(Prod(0, S), -Prod(e_j, e_i)) / S**2
  steps = (
    Step(
      "Softmax maps logits $z$ to probabilities $a$.",
      eq(a[i], sp.exp(z[i]) / S),
      (
        AgreesWithJax(
          lambda jx, x: jx.softmax(x), ((z, LOGITS),), what="jaxsmx.softmax"
        ),
      ),
      role="definition",
    ),
    Step(
      "They sum to one.",
      eq(summation(a[k]), 1),
      (General(),),
    ),
    Step(
      "Case $i = j$. The quotient rule; $z_i$ appears in the numerator and in the sum.",
      Chain(
        D(a[i], z[i]),
        quotient_ii,
        Terms(a[i], -(a[i] ** 2)),
        Dot(a[i], 1 - a[i]),
      ),
      (General(),),
    ),
    Step(
      r"Case $i \neq j$. The numerator $e^{z_j}$ does not depend on "
      "$z_i$; only the sum does.",
      Chain(D(a[j], z[i]), quotient_ij, -a[i] * a[j]),
      (General(NE, "i ≠ j, so δ_ij = 0"),),
    ),
    Step(
      r"Both cases in one formula, with the Kronecker delta "
      r"$\delta_{ij}$. This is the Jacobian $J_{ij} = "
      r"\partial a_i / \partial z_j$.",
      eq(D(a[i], z[j]), Dot(a[i], delta(i, j) - a[j])),
      (General(), Concrete(softmax_jacobian_ref, (i, j))),
      name="jacobian",
      agrees=(
        Numeric(
          "Jacobian", "softmax", (i, j), ((z, LOGITS),), by_jacrev(), "jax.jacrev"
        ),
      ),
      role="result",
    ),
    Step(
      "In matrix form. $J$ is symmetric, so it is also its own transpose.",
      eq(
        sp.Symbol("J"),
        Terms(Diag(sp.Symbol("a")), -Dot(sp.Symbol("a"), Transpose(sp.Symbol("a")))),
      ),
      (Explicit(_matrix_form_holds, "n = 1..8 vs Matrix.jacobian"),),
    ),
    Step(
      r"Reverse mode needs $J^{\mathsf T} g$ for a cotangent $g$, "
      r"never $J$ itself: $O(n)$ work instead of $O(n^2)$.",
      Chain(
        bar_z,
        summation(Dot(g[j], D(a[j], z[i])), j),
        summation(Prod(g[j], a[j], delta(i, j) - a[i]), j),
        Dot(a[i], g[i] - summation(g[k] * a[k])),
      ),
      (
        General(),
        Concrete(
          _softmax_vjp_ref,
          (i,),
          sizes=tuple(range(1, 7)),
          what="Matrix.jacobian(...).T g",
        ),
      ),
      name="vjp",
      agrees=(
        Numeric(
          "VJP", "softmax", (i,), ((z, LOGITS), (g, COTANGENT)), by_vjp(), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  examples = (
    Example(
      "The article's example: the outputs $(3, 1, -3)$. (The article prints "
      "0.1190 for 0.11894.)",
      tuple(sp.exp(v) / sum(sp.exp(w) for w in (3, 1, -3)) for v in (3, 1, -3)),
      (0.8789, 0.1190, 0.0022),
      lambda m: m.softmax(_f64([3.0, 1.0, -3.0])),
      "jaxsmx.softmax(jnp.array([3.0, 1.0, -3.0]))",
    ),
  )
  return Derivation(
    key="softmax",
    title="Softmax",
    functions=("softmax",),
    intro=(
      "The article's first object. Its Jacobian has two cases, which the "
      "article derives separately and which combine into "
      r"$\operatorname{diag}(a) - a a^{\mathsf T}$."
    ),
    ctx=SOFTMAX_CTX,
    steps=steps,
    headline=eq(D(a[i], z[j]), Dot(a[i], delta(i, j) - a[j])),
    examples=examples,
  )


def _log_softmax_ref(size: int) -> sp.Matrix:
  zs = vec(z, size)
  lse = sp.log(sum(sp.exp(x) for x in zs))
  return sp.Matrix([x - lse for x in zs]).jacobian(zs)


def _log_softmax_matrix_form() -> bool:
  for size in range(1, 9):
    av = explicit_softmax(size)
    form = sp.eye(size) - sp.ones(size, 1) * av.T
    if not all(concrete_zero(e) for e in _log_softmax_ref(size) - form):
      return False
  return True


def log_softmax_derivation() -> Derivation:
  bar_z = label(r"\bar{z}_{j}")
  lse_z = named(LSE, z)
  steps = (
    Step(
      "Log-softmax is the log of softmax, computed as a difference so "
      "that no probability is ever rounded to zero.",
      Chain(sp.log(a[i]), Terms(z[i], -sp.log(S)), Terms(z[i], -lse_z)),
      (General(),),
    ),
    Step(
      "The first term gives the identity, the second the gradient of "
      "logsumexp, which is softmax.",
      Chain(
        D(sp.log(a[i]), z[j]),
        Terms(delta(i, j), -sp.exp(z[j]) / S),
        delta(i, j) - a[j],
      ),
      (
        General(),
        Concrete(_log_softmax_ref, (i, j)),
      ),
      name="jacobian",
      agrees=(
        Numeric(
          "Jacobian", "log_softmax", (i, j), ((z, LOGITS),), by_jacrev(), "jax.jacrev"
        ),
      ),
      role="result",
    ),
    Step(
      "In matrix form.",
      eq(
        sp.Symbol("J"),
        Terms(
          sp.Symbol("I"), -Dot(sp.Symbol(r"\mathbf{1}"), Transpose(sp.Symbol("a")))
        ),
      ),
      (Explicit(_log_softmax_matrix_form, "n = 1..8 vs Matrix.jacobian"),),
    ),
    Step(
      "The VJP contracts over the output index $i$.",
      Chain(
        bar_z,
        summation(Dot(g[i], D(sp.log(a[i]), z[j])), i),
        Terms(g[j], -a[j] * summation(g[i], i)),
      ),
      (
        General(),
        Concrete(
          lambda size: _log_softmax_ref(size).T * sp.Matrix(vec(g, size)),
          (j,),
          sizes=tuple(range(1, 7)),
          what="Matrix.jacobian(...).T g",
        ),
      ),
      name="vjp",
      agrees=(
        Numeric(
          "VJP", "log_softmax", (j,), ((z, LOGITS), (g, COTANGENT)), by_vjp(), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="log_softmax",
    title="Log-softmax",
    functions=("log_softmax",),
    intro=(
      "The article recommends log-softmax for numerical stability. Its "
      "Jacobian is simpler than softmax's: no product of probabilities."
    ),
    ctx=SOFTMAX_CTX,
    steps=steps,
    headline=eq(D(sp.log(a[i]), z[j]), delta(i, j) - a[j]),
  )


def _lse_explicit(size: int) -> sp.Expr:
  return sp.log(sum(sp.exp(x) for x in vec(z, size)))


def logsumexp_derivation() -> Derivation:
  lse_z = named(LSE, z)
  gs = sp.Symbol("g", real=True)
  steps = (
    Step(
      "The log-normaliser of softmax.",
      eq(lse_z, sp.log(S)),
      (
        AgreesWithJax(
          lambda jx, x: jx.logsumexp(x), ((z, LOGITS),), (), "jaxsmx.logsumexp"
        ),
      ),
      role="definition",
    ),
    Step(
      "Its gradient is softmax.",
      Chain(D(lse_z, z[i]), sp.exp(z[i]) / S, a[i]),
      (
        General(),
        Concrete(
          gradient_ref(_lse_explicit, z),
          (i,),
        ),
      ),
      name="gradient",
      agrees=(
        Numeric("gradient", "logsumexp", (i,), ((z, LOGITS),), by_grad(), "jax.grad"),
      ),
      role="result",
    ),
    Step(
      "So its Hessian is the softmax Jacobian. It is positive "
      "semi-definite: logsumexp is convex.",
      eq(D2(lse_z, z[i], z[j]), Dot(a[i], delta(i, j) - a[j])),
      (
        General(),
        Concrete(
          lambda size: sp.hessian(_lse_explicit(size), vec(z, size)),
          (i, j),
          what="sympy.hessian",
        ),
      ),
      name="hessian",
      agrees=(
        Numeric(
          "Hessian", "logsumexp", (i, j), ((z, LOGITS),), by_hessian(), "jax.hessian"
        ),
      ),
      role="result",
    ),
    Step(
      "The output is a scalar per slice, so the cotangent $g$ is a "
      "scalar and the VJP scales the gradient.",
      Chain(label(r"\bar{z}_{i}"), gs * D(lse_z, z[i]), gs * a[i]),
      (General(), vjp_check(_lse_explicit, z, gs)),
      name="vjp",
      agrees=(
        Numeric(
          "VJP", "logsumexp", (i,), ((z, LOGITS), (gs, COTANGENT)), by_vjp(), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="logsumexp",
    title="Logsumexp",
    functions=("logsumexp",),
    intro="The normaliser shared by every function in jaxsmx.",
    ctx=SOFTMAX_CTX,
    steps=steps,
    headline=eq(D(lse_z, z[i]), a[i]),
  )


# The scale factors b of jax.nn.logsumexp(a, b=b); positive in the symbolic
# steps, any sign in the numeric ones (see the sign step).
bb = sp.IndexedBase("b", positive=True)
SB = summation(bb[k] * sp.exp(z[k]))
LSE_B = r"\operatorname{lse}_b"
LSE_B_CTX = Context(
  {
    **SOFTMAX_CTX.defs,
    LSE_B: lambda base, w: sp.log(summation(w[k] * sp.exp(base[k]))),
  },
  "lse_b(z) = log Σ b e^z",
)


def _lse_b_explicit(size: int) -> sp.Expr:
  return sp.log(
    sum(w * sp.exp(x) for x, w in zip(vec(z, size), vec(bb, size), strict=True))
  )


def _log_abs_rule() -> bool:
  s_ = sp.Symbol("S", negative=True)
  return sp.simplify(sp.diff(sp.log(-s_), s_) - 1 / s_) == 0


def logsumexp_b_derivation() -> Derivation:
  lse_b = named(LSE_B, z, bb)
  gs = sp.Symbol("g", real=True)
  da = bb[i] * sp.exp(z[i]) / SB
  db = sp.exp(z[i]) / SB
  steps = (
    Step(
      "`logsumexp(a, b=b)` weighs each term, as in `jax.nn.logsumexp`; "
      "$b = 1$ is the plain log-normaliser.",
      eq(lse_b, sp.log(SB)),
      (
        AgreesWithJax(
          lambda jx, x, w: jx.logsumexp(x, b=w),
          ((z, LOGITS), (bb, POSITIVE)),
          (),
          "jaxsmx.logsumexp(b=b)",
        ),
      ),
      role="definition",
      name="definition",
    ),
    Step(
      "For a negative sum the value is $\\log|S|$ and `return_sign` gives "
      "the sign; $\\frac{d}{dS}\\log|S| = 1/S$ either way, so the gradients "
      "below hold for $b$ of any sign (where $S \\ne 0$).",
      eq(sp.Symbol(r"\frac{d}{dS}\log(-S)"), sp.Symbol(r"\frac{1}{S}")),
      (Explicit(_log_abs_rule, "sympy.diff for S < 0"),),
    ),
    Step(
      "The gradient with respect to the logits: the weighted softmax.",
      eq(D(lse_b, z[i]), da),
      (
        General(),
        Concrete(gradient_ref(_lse_b_explicit, z), (i,), sizes=tuple(range(1, 7))),
      ),
      name="grad_z",
      role="result",
    ),
    Step(
      "With respect to the weights.",
      eq(D(lse_b, bb[i]), db),
      (
        General(),
        Concrete(gradient_ref(_lse_b_explicit, bb), (i,), sizes=tuple(range(1, 7))),
      ),
      name="grad_b",
      role="result",
    ),
    Step(
      "The VJPs; the sign output is piecewise constant and gets no cotangent.",
      Chain(label(r"\bar{z}_{i}"), gs * D(lse_b, z[i]), gs * da),
      (General(), vjp_check(_lse_b_explicit, z, gs)),
      name="vjp_z",
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{b}_{i}"), gs * D(lse_b, bb[i]), gs * db),
      (General(), vjp_check(_lse_b_explicit, bb, gs)),
      name="vjp_b",
      role="vjp",
    ),
  )
  return Derivation(
    key="logsumexp_b",
    title="Logsumexp with weights and sign",
    functions=("logsumexp",),
    intro=(
      "`logsumexp(a, b=b, return_sign=True)` as in `jax.nn.logsumexp`: "
      "the value is $\\log|\\sum_k b_k e^{z_k}|$ and the sign is returned "
      "beside it."
    ),
    ctx=LSE_B_CTX,
    steps=steps,
    headline=eq(D(lse_b, z[i]), da),
  )


def _f64(values):
  import jax.numpy as jnp

  return jnp.asarray(values, dtype=jnp.float64)


def derivations() -> tuple[Derivation, ...]:
  return (
    softmax_derivation(),
    log_softmax_derivation(),
    logsumexp_derivation(),
    logsumexp_b_derivation(),
  )


# ---------------------------------------------------------------------------
# Options, edges and dtypes: the cases jaxsmx's VJPs must agree on.


def _softmax_cases(by_key, fn, key, index):
  vjp = term(by_key[key], "vjp", (z, "x"), (g, "cot"), index=index)

  def plain(rng):
    return Problem({"x": logits(rng)}, {}, rng.standard_normal((ROWS, CLASSES)))

  def where(rng):
    m = class_mask(rng)
    return Problem(
      {"x": logits(rng)}, {"where": m}, rng.standard_normal(m.shape), keep=m
    )

  def per_row(rng):
    m = row_mask()[:, None]
    return Problem(
      {"x": logits(rng)}, {"where": m}, rng.standard_normal((ROWS, CLASSES)), keep=m
    )

  def neg_inf(rng):
    x = logits(rng)
    x[:, 2] = -np.inf
    x[-1] = -np.inf  # an all -inf slice
    last = np.arange(ROWS) == ROWS - 1
    if fn == "softmax":  # softmax of an empty slice is 0, and so its gradient
      return Problem({"x": x}, {}, rng.standard_normal(x.shape), zero=last)

    def fix(e, prob):  # log_softmax: a = 0 there, so the closed form is g
      e = e.copy()
      e[last] = prob.cot[last]
      return e

    return Problem(
      {"x": x}, {}, rng.standard_normal(x.shape), keep=~last[:, None], fix=fix
    )

  return [
    Case(fn, "plain", "x", plain, vjp),
    Case(fn, "where per class, empty slice", "x", where, vjp),
    Case(fn, "where per example", "x", per_row, vjp),
    Case(fn, "-inf logits, all -inf slice", "x", neg_inf, vjp),
  ]


def _lse_cases(by_key):
  vjp = term(by_key["logsumexp"], "vjp", (z, "a"), (gs, "cot"))
  vz = term(by_key["logsumexp_b"], "vjp_z", (z, "a"), (bb, "b"), (gs, "cot"))
  vb = term(by_key["logsumexp_b"], "vjp_b", (z, "a"), (bb, "b"), (gs, "cot"))

  def plain(rng):
    return Problem({"a": logits(rng)}, {"axis": -1}, cotangent(rng))

  def where(rng):
    m = class_mask(rng)
    return Problem({"a": logits(rng)}, {"axis": -1, "where": m}, cotangent(rng), keep=m)

  def with_b(rng):
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    return Problem({"a": logits(rng), "b": b}, {"axis": -1}, cotangent(rng))

  def signed_b(rng):
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    b[1] *= -1.0  # a negative sum: log|S| and sign -1
    b[2, :2] *= -1.0
    return Problem(
      {"a": logits(rng), "b": b}, {"axis": -1, "return_sign": True}, cotangent(rng)
    )

  def b_where(rng):
    m = class_mask(rng)
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    return Problem(
      {"a": logits(rng), "b": b}, {"axis": -1, "where": m}, cotangent(rng), keep=m
    )

  hessian = term(by_key["logsumexp"], "hessian", (z, "a"), index=(i, j))

  def second_order(rng):
    prob = where(rng)
    prob.direction = rng.standard_normal(prob.keep.shape)
    return prob

  fn = "logsumexp"
  second = "where per class, empty slice, second order"
  return [
    Case(fn, second, "a", second_order, hessian, order=2),
    Case(fn, "plain", "a", plain, vjp),
    Case(fn, "where per class, empty slice", "a", where, vjp),
    Case(fn, "b", "a", with_b, vz),
    Case(fn, "b", "b", with_b, vb),
    Case(fn, "b of both signs, return_sign", "a", signed_b, vz),
    Case(fn, "b of both signs, return_sign", "b", signed_b, vb),
    Case(fn, "b, where per class", "a", b_where, vz),
    Case(fn, "b, where per class", "b", b_where, vb),
  ]


def cases(by_key) -> list[Case]:
  """softmax, log_softmax and logsumexp under every option and edge."""
  base = (
    _softmax_cases(by_key, "softmax", "softmax", i)
    + _softmax_cases(by_key, "log_softmax", "log_softmax", j)
    + _lse_cases(by_key)
  )
  return base + with_dtypes(base)
