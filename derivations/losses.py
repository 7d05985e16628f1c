r"""Cross-entropy losses: the article's five steps, label smoothing and sigmoid BCE."""

from __future__ import annotations

import functools

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
  UNIT,
  WEIGHTS,
  Numeric,
  by_grad,
  by_hessian,
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
  Limit,
  Ordered,
  Prod,
  Step,
  SumNe,
  Terms,
  Transpose,
  a,
  at,
  concrete_zero,
  ell,
  eq,
  explicit_softmax,
  g,
  gradient_ref,
  i,
  j,
  k,
  label,
  n,
  named,
  softmax_of,
  summation,
  vec,
  vjp_check,
  y,
  z,
)

delta = sp.KroneckerDelta
C = sp.Symbol("C")  # the loss of one example
Cj = sp.IndexedBase("C")  # its j-th term, C = sum_j C_j
gs = sp.Symbol("g", real=True)  # the per-example cotangent
alpha = sp.Symbol(r"\alpha", nonnegative=True)
lam = sp.Symbol(r"\lambda", nonnegative=True)
cap = sp.Symbol("c", positive=True)
LSE = r"\operatorname{lse}"
S = summation(sp.exp(z[k]))


# ---------------------------------------------------------------------------
# How the numeric checks call the losses.

SCE = "softmax_cross_entropy"
BCE = "sigmoid_binary_cross_entropy"
ZY = ((z, LOGITS), (y, WEIGHTS))  # sum(y) != 1 exercises a * sum(y)
ZU = ((z, LOGITS), (y, UNIT))  # binary targets in (0, 1)


def _hessian_in_z(fn, z_, y_):
  return by_hessian(1)(lambda zz: fn(zz, y_), z_)


def _with_label(inner):
  """Passes the integer label ⌈n/2⌉ (0-based: ⌈n/2⌉ - 1) as the second argument."""
  import jax.numpy as jnp

  def run(fn, z_, *rest):
    lab = jnp.asarray((z_.shape[-1] + 1) // 2 - 1, dtype=jnp.int32)
    return inner(lambda zz, *r, **kw: fn(zz, lab, *r, **kw), z_, *rest)

  return run


def _smoothed(what, value, autodiff, *cotangent_input):
  """A check of the integer-label loss with smoothing ``value``."""
  return Numeric(
    what,
    "softmax_cross_entropy_with_integer_labels",
    (i,),
    ((z, LOGITS), *cotangent_input),
    _with_label(autodiff),
    "jax.vjp" if cotangent_input else "jax.grad",
    params={alpha: value},
    extra=_label_of,
  )


def _bce_hessian(fn, z_, y_):
  import jax
  import jax.numpy as jnp

  return jax.hessian(lambda zz: jnp.sum(fn(zz, y_)))(z_)


def _diag_expected(formula, *arrays):
  import jax.numpy as jnp

  return np.diag(np.asarray(formula(*[jnp.asarray(x) for x in arrays])).reshape(-1))


def _lse(base):
  return sp.log(summation(sp.exp(base[k])))


CE_CTX = Context(
  {
    a: softmax_of(z),
    C: -summation(y[k] * sp.log(a[k])),
    Cj: lambda t: -y[t] * sp.log(a[t]),
    LSE: _lse,
  },
  "a = softmax(z), C = -Σ y log a",
)


def _log_softmax_explicit(size: int) -> list[sp.Expr]:
  # log a_k = z_k - log sum exp, the form jaxsmx computes; it is the same
  # function as log(exp(z_k) / sum exp) and far cheaper to differentiate.
  zs = vec(z, size)
  lse = sp.log(sum(sp.exp(x) for x in zs))
  return [x - lse for x in zs]


@functools.cache
def _ce_explicit(size: int) -> sp.Expr:
  logs = _log_softmax_explicit(size)
  return -sum(yv * lv for yv, lv in zip(vec(y, size), logs, strict=True))


@functools.cache
def _ce_hessian(size: int) -> sp.Matrix:
  return sp.hessian(_ce_explicit(size), vec(z, size))


def _ce_matrix_hessian() -> bool:
  for size in range(1, 7):
    av = explicit_softmax(size)
    form = sum(vec(y, size)) * (sp.diag(*av) - av * av.T)
    h = _ce_hessian(size)
    if not all(concrete_zero(e) for e in h - form):
      return False
  return True


FIVE_CLASS = (
  (0.1, 0.15, 0.05, 0.6, 0.1),
  (0.15, 0.2, 0.4, 0.1, 0.15),
  (0.05, 0.15, 0.4, 0.3, 0.1),
)


def _seed_example(probs):
  exact = -sp.log(sp.Rational(str(probs[3])))

  def call(m):
    import jax.numpy as jnp

    logits = jnp.log(jnp.asarray(probs, dtype=jnp.float64))
    return [m.softmax_cross_entropy_with_integer_labels(logits, 3)]

  text = ", ".join(str(v) for v in probs)
  return Example(
    rf"$a = ({text})$, label index 3: the loss is $-\log {probs[3]}$.",
    (exact,),
    (round(float(exact), 4),),
    call,
    "softmax_cross_entropy_with_integer_labels(jnp.log(a), 3)",
  )


def softmax_cross_entropy_derivation() -> Derivation:
  sum_y = summation(y[j], j)
  steps = (
    Step(
      "Softmax turns the logits into probabilities (see the softmax section).",
      eq(a[i], sp.exp(z[i]) / S),
      role="definition",
    ),
    Step(
      "The loss is the cross-entropy between the labels $y$ and $a$, a "
      "sum of one term per class.",
      Chain(C, summation(Cj[j], j), -summation(Dot(y[j], sp.log(a[j])), j)),
      (General(),),
      role="definition",
      name="value",
    ),
    Step(
      "For a one-hot $y$ with its 1 at the label $\\ell$ only one term "
      "survives: the article's softmax loss.",
      eq(C, -sp.log(a[ell])),
      (General(why="y_j = δ_jℓ"),),
      ctx=Context({**CE_CTX.defs, y: lambda t: delta(t, ell)}),
    ),
    Step(
      "The article's three predictions are ordered as the label's "
      "probability says: $0.6 > 0.3 > 0.1$.",
      Ordered(label(r"-\log 0.6"), label(r"-\log 0.3"), label(r"-\log 0.1")),
      (
        Explicit(
          lambda: (
            -sp.log(sp.Rational(6, 10))
            < -sp.log(sp.Rational(3, 10))
            < -sp.log(sp.Rational(1, 10))
          ),
          "exact comparison",
        ),
      ),
    ),
    Step(
      "The chain rule through $a$. Every $a_j$ depends on every $z_i$, "
      "so the sum runs over all $j$; $C_j$ depends on $a_j$ alone.",
      eq(D(C, z[i]), summation(Dot(D(Cj[j], a[j]), D(a[j], z[i])), j)),
      (General(),),
    ),
    Step(
      "The outer derivative.",
      eq(D(Cj[j], a[j]), -y[j] / a[j]),
      (General(),),
      tag="Seed step 1",
    ),
    Step(
      "Case $i = j$ (derived in the softmax section).",
      eq(D(a[i], z[i]), Dot(a[i], 1 - a[i])),
      (General(),),
      tag="Seed step 2",
    ),
    Step(
      r"Case $i \neq j$.",
      eq(D(a[j], z[i]), -a[i] * a[j]),
      (General(((delta(i, j), 0),), "i ≠ j, so δ_ij = 0"),),
      tag="Seed step 3",
    ),
    Step(
      r"Split the sum into $j = i$ and $j \neq i$ and "
      "insert steps 1 to 3.",
      eq(
        D(C, z[i]),
        Terms(
          Prod(-y[i] / a[i], Dot(a[i], 1 - a[i])),
          SumNe(Prod(-y[j] / a[j], -a[i] * a[j]), j, i),
        ),
      ),
      (General(),),
      tag="Seed step 4",
    ),
    Step(
      "The $a_j$ cancel. Multiply out.",
      eq(
        D(C, z[i]),
        Terms(-y[i], a[i] * y[i], Dot(a[i], SumNe(y[j], j, i))),
      ),
      (General(),),
    ),
    Step(
      "The $a_i y_i$ term completes the sum over $j \\neq i$ to the full sum.",
      eq(D(C, z[i]), Terms(a[i] * sum_y, -y[i])),
      (
        General(),
        Concrete(
          gradient_ref(_ce_explicit, z),
          (i,),
        ),
      ),
      name="grad_z",
      agrees=(
        Numeric("gradient wrt logits", SCE, (i,), ZY, by_grad(0, 2), "jax.grad"),
      ),
      role="result",
    ),
    Step(
      r"For one-hot $y$, $\sum_j y_j = 1$: the gradient "
      "is prediction minus target.",
      eq(D(C, z[i]), a[i] - y[i]),
      (General(((sum_y, 1),), "Σ_j y_j = 1"),),
      tag="Seed step 5",
    ),
    Step(
      "jaxsmx also differentiates with respect to the labels (for "
      "distillation, where they are predictions too).",
      Chain(D(C, y[i]), -sp.log(a[i]), Terms(named(LSE, z), -z[i])),
      (
        General(),
        Concrete(
          gradient_ref(_ce_explicit, y),
          (i,),
        ),
      ),
      name="grad_y",
      agrees=(
        Numeric("gradient wrt labels", SCE, (i,), ZY, by_grad(1, 2), "jax.grad"),
      ),
      role="result",
    ),
    Step(
      "**Second order.** Differentiate $a_i \\sum_j y_j - y_i$ once more: "
      "the labels drop out and the softmax Jacobian remains.",
      eq(D2(C, z[i], z[j]), Dot(summation(y[k]), a[i], delta(i, j) - a[j])),
      (
        General(),
        Concrete(
          _ce_hessian,
          (i, j),
          sizes=tuple(range(1, 7)),
          what="sympy.hessian",
        ),
      ),
      name="hessian",
      agrees=(
        Numeric("Hessian wrt logits", SCE, (i, j), ZY, _hessian_in_z, "jax.hessian"),
      ),
      role="result",
    ),
    Step(
      "In matrix form. For $y \\ge 0$ it is positive semi-definite: the "
      "loss is convex in the logits.",
      eq(
        label(r"\nabla^2_z C"),
        Dot(
          summation(y[k]),
          Terms(Diag(sp.Symbol("a")), -Dot(sp.Symbol("a"), Transpose(sp.Symbol("a")))),
        ),
      ),
      (Explicit(_ce_matrix_hessian, "n = 1..6 vs sympy.hessian"),),
    ),
    Step(
      "The VJP with respect to the logits: the loss is one scalar per "
      "example, so its cotangent $g$ scales the gradient.",
      Chain(
        label(r"\bar{z}_{i}"), gs * D(C, z[i]), Dot(gs, Terms(a[i] * sum_y, -y[i]))
      ),
      (General(), vjp_check(_ce_explicit, z, gs)),
      name="vjp_z",
      agrees=(
        Numeric(
          "VJP wrt logits", SCE, (i,), (*ZY, (gs, COTANGENT)), by_vjp(0, 2), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
    Step(
      "The VJP with respect to the labels.",
      Chain(label(r"\bar{y}_{i}"), gs * D(C, y[i]), -gs * sp.log(a[i])),
      (General(), vjp_check(_ce_explicit, y, gs)),
      name="vjp_y",
      agrees=(
        Numeric(
          "VJP wrt labels", SCE, (i,), (*ZY, (gs, COTANGENT)), by_vjp(1, 2), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="softmax_cross_entropy",
    title="Softmax cross-entropy: the article's derivation",
    functions=("softmax_cross_entropy",),
    intro=(
      "The article's main result, step by step. The labels $y$ may be any "
      "non-negative weights; the article's one-hot case is the last step. "
      "Each step is an identity that is checked, not just written down."
    ),
    ctx=CE_CTX,
    steps=steps,
    headline=eq(D(C, z[i]), Terms(a[i] * sum_y, -y[i])),
    examples=tuple(_seed_example(pv) for pv in FIVE_CLASS),
  )


# ---------------------------------------------------------------------------
# Integer labels with label smoothing.

SMOOTH_CTX = Context(
  {
    **CE_CTX.defs,
    y: lambda c: (1 - alpha) * delta(c, ell) + alpha / n,
  },
  "y = (1 - α) onehot(ℓ) + α/n",
)


def _label_of(size: int) -> dict:
  return {ell: (size + 1) // 2}


def _smooth_explicit(size: int) -> sp.Expr:
  logs = _log_softmax_explicit(size)
  lab = _label_of(size)[ell]
  ys = [(1 - alpha) * (1 if r + 1 == lab else 0) + alpha / size for r in range(size)]
  return -sum(yv * lv for yv, lv in zip(ys, logs, strict=True))


def label_smoothing_derivation() -> Derivation:
  steps = (
    Step(
      r"Label smoothing with $\alpha \in [0, 1]$ moves mass $\alpha$ from "
      "the label $\\ell$ to all $n$ classes evenly.",
      eq(y[i], Terms(Dot(1 - alpha, delta(i, ell)), alpha / n)),
      role="definition",
    ),
    Step(
      "The smoothed target still sums to one.",
      eq(summation(y[k]), 1),
      (General(),),
    ),
    Step(
      "So the loss is the label's term plus a uniform term.",
      Chain(
        C,
        -summation(Dot(y[k], sp.log(a[k]))),
        Terms(
          -Dot(1 - alpha, sp.log(a[ell])), -Dot(alpha / n, summation(sp.log(a[k])))
        ),
      ),
      (General(),),
      name="value",
    ),
    Step(
      "The softmax cross-entropy gradient $a_i \\sum_k y_k - y_i$ with "
      "$\\sum_k y_k = 1$.",
      Chain(
        D(C, z[i]),
        Terms(a[i] * summation(y[k]), -y[i]),
        Terms(a[i], -Dot(1 - alpha, delta(i, ell)), -alpha / n),
      ),
      (
        General(),
        Concrete(
          gradient_ref(_smooth_explicit, z),
          (i,),
          extra=_label_of,
          what="Matrix.jacobian (ℓ = ⌈n/2⌉)",
        ),
      ),
      name="grad_z",
      agrees=(
        _smoothed("gradient, α = 0", 0.0, by_grad()),
        _smoothed("gradient, α = 0.1", 0.1, by_grad(label_smoothing=0.1)),
      ),
      role="result",
    ),
    Step(
      "The VJP; the integer labels get no cotangent.",
      Chain(
        label(r"\bar{z}_{i}"),
        gs * D(C, z[i]),
        Dot(gs, Terms(a[i], -Dot(1 - alpha, delta(i, ell)), -alpha / n)),
      ),
      (General(), vjp_check(_smooth_explicit, z, gs, extra=_label_of)),
      name="vjp_z",
      agrees=(
        _smoothed("VJP, α = 0.3", 0.3, by_vjp(label_smoothing=0.3), (gs, COTANGENT)),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="label_smoothing",
    title="Integer labels and label smoothing",
    functions=("softmax_cross_entropy_with_integer_labels",),
    intro=(
      "The integer-label loss is the previous one with a smoothed one-hot "
      "target; $\\alpha = 0$ is the article's case."
    ),
    ctx=SMOOTH_CTX,
    steps=steps,
    headline=eq(D(C, z[i]), Terms(a[i], -Dot(1 - alpha, delta(i, ell)), -alpha / n)),
  )


# ---------------------------------------------------------------------------
# Soft labels with label smoothing.

ys = sp.IndexedBase(r"\tilde{y}", real=True)  # the smoothed soft labels
SOFT_SMOOTH_CTX = Context(
  {
    **CE_CTX.defs,
    C: -summation(ys[k] * sp.log(a[k])),
    ys: lambda c: (1 - alpha) * y[c] + alpha / n,
  },
  "ỹ = (1 - α) y + α/n, C = -Σ ỹ log a",
)


def _soft_smooth_explicit(size: int) -> sp.Expr:
  logs = _log_softmax_explicit(size)
  yv = [(1 - alpha) * v + alpha / size for v in vec(y, size)]
  return -sum(w * lv for w, lv in zip(yv, logs, strict=True))


def soft_label_smoothing_derivation() -> Derivation:
  sum_y = summation(y[k])
  dz = Terms(
    Dot(a[i], Terms(Dot(1 - alpha, sum_y), alpha)), -Dot(1 - alpha, y[i]), -alpha / n
  )
  dy = -Dot(1 - alpha, sp.log(a[i]))
  steps = (
    Step(
      "optax smooths soft labels the same way: mass $\\alpha$ is spread "
      "evenly over the $n$ classes.",
      eq(ys[i], Terms(Dot(1 - alpha, y[i]), alpha / n)),
      role="definition",
      name="definition",
    ),
    Step(
      "The loss is the cross-entropy against the smoothed labels.",
      eq(C, -summation(Dot(ys[k], sp.log(a[k])))),
      role="definition",
      name="value",
    ),
    Step(
      "The gradient with respect to the logits is $a_i \\sum_k \\tilde y_k "
      "- \\tilde y_i$, with $\\sum_k \\tilde y_k = (1 - \\alpha)\\sum_k y_k "
      "+ \\alpha$.",
      eq(D(C, z[i]), dz),
      (
        General(),
        Concrete(
          gradient_ref(_soft_smooth_explicit, z), (i,), sizes=tuple(range(1, 7))
        ),
      ),
      name="grad_z",
      role="result",
    ),
    Step(
      "With respect to the labels, the chain rule through $\\tilde y$ "
      "brings the factor $1 - \\alpha$.",
      eq(D(C, y[i]), dy),
      (
        General(),
        Concrete(
          gradient_ref(_soft_smooth_explicit, y), (i,), sizes=tuple(range(1, 7))
        ),
      ),
      name="grad_y",
      role="result",
    ),
    Step(
      "The VJPs.",
      Chain(label(r"\bar{z}_{i}"), gs * D(C, z[i]), Dot(gs, dz)),
      (General(), vjp_check(_soft_smooth_explicit, z, gs)),
      name="vjp_z",
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{y}_{i}"), gs * D(C, y[i]), Dot(gs, dy)),
      (General(), vjp_check(_soft_smooth_explicit, y, gs)),
      name="vjp_y",
      role="vjp",
    ),
  )
  return Derivation(
    key="soft_label_smoothing",
    title="Soft labels and label smoothing",
    functions=("softmax_cross_entropy",),
    intro=(
      "`softmax_cross_entropy(..., label_smoothing=α)` smooths soft labels "
      "before the loss; both gradients change, the labels' by the factor "
      "$1 - \\alpha$."
    ),
    ctx=SOFT_SMOOTH_CTX,
    steps=steps,
    headline=eq(D(C, y[i]), dy),
  )


# ---------------------------------------------------------------------------
# Sigmoid binary cross-entropy.

SIGMA = r"\sigma"
Q = sp.IndexedBase("Q")


def sigma(x):
  return named(SIGMA, x)


BCE_CTX = Context(
  {
    SIGMA: lambda x: 1 / (1 + sp.exp(-x)),
    Cj: lambda t: -y[t] * sp.log(sigma(z[t])) - (1 - y[t]) * sp.log(1 - sigma(z[t])),
    Q: lambda t: (sigma(z[t]) - y[t]) ** 2 / 2,
  },
  "σ(z) = 1/(1 + e^{-z})",
)


def _bce_vector(size: int) -> sp.Matrix:
  return _bce_explicit(size)[0]


def _bce_explicit(size):
  zs, ys = vec(z, size), vec(y, size)
  out = []
  for zv, yv in zip(zs, ys, strict=True):
    s = 1 / (1 + sp.exp(-zv))
    out.append(-yv * sp.log(s) - (1 - yv) * sp.log(1 - s))
  return sp.Matrix(out), zs, ys


def sigmoid_bce_derivation() -> Derivation:
  s_i = sigma(z[i])
  zeta = sp.Symbol("z", real=True)  # a scalar logit, for limits
  s_z = sigma(zeta)
  steps = (
    Step(
      "The sigmoid squashes a logit into $(0, 1)$.",
      eq(s_i, 1 / (1 + sp.exp(-z[i]))),
      role="definition",
    ),
    Step(
      "The binary cross-entropy of one element with target $y_i \\in [0, 1]$.",
      eq(Cj[i], Terms(-Dot(y[i], sp.log(s_i)), -Dot(1 - y[i], sp.log(1 - s_i)))),
      role="definition",
    ),
    Step(
      "The sigmoid's derivative is a product of its outputs, like the "
      "softmax case $i = j$.",
      Chain(D(s_i, z[i]), sp.exp(-z[i]) / (1 + sp.exp(-z[i])) ** 2, Dot(s_i, 1 - s_i)),
      (General(),),
    ),
    Step(
      "The chain rule; the factor $\\sigma(1 - \\sigma)$ cancels the denominators.",
      Chain(
        D(Cj[i], z[i]),
        Prod(Terms(-y[i] / s_i, (1 - y[i]) / (1 - s_i)), Dot(s_i, 1 - s_i)),
        s_i - y[i],
      ),
      (
        General(),
        Concrete(
          lambda size: sp.Matrix(
            [_bce_explicit(size)[0][r].diff(vec(z, size)[r]) for r in range(size)]
          ),
          (i,),
          what="sympy.diff",
        ),
      ),
      name="grad_z",
      role="result",
    ),
    Step(
      "With respect to the target: the log-odds, with a minus sign.",
      Chain(D(Cj[i], y[i]), Terms(-sp.log(s_i), sp.log(1 - s_i)), -z[i]),
      (General(),),
      name="grad_y",
      role="result",
    ),
    Step(
      "The second derivative, for the Hessian (diagonal: the loss is elementwise).",
      eq(D2(Cj[i], z[i], z[i]), Dot(s_i, 1 - s_i)),
      (General(),),
      name="hessian",
      agrees=(
        Numeric(
          "Hessian of the sum",
          BCE,
          (i,),
          ZU,
          _bce_hessian,
          "jax.hessian",
          expected=_diag_expected,
        ),
      ),
      role="result",
    ),
    Step(
      "The alternative the article compares with: squared error on the sigmoid.",
      eq(Q[i], Dot(sp.Rational(1, 2), (s_i - y[i]) ** 2)),
      role="definition",
    ),
    Step(
      "Its gradient keeps the factor $\\sigma(1 - \\sigma)$.",
      eq(D(Q[i], z[i]), Dot(s_i - y[i], s_i, 1 - s_i)),
      (General(),),
    ),
    Step(
      "That factor is at most $1/4$, ...",
      eq(Terms(sp.Rational(1, 4), -Dot(s_z, 1 - s_z)), (s_z - sp.Rational(1, 2)) ** 2),
      (General(),),
    ),
    Step(
      "... reached at $z = 0$ ...",
      eq(at(Dot(s_z, 1 - s_z), (zeta, 0)), sp.Rational(1, 4)),
      (General(),),
    ),
    Step(
      "... and vanishes as the sigmoid saturates. A confidently wrong "
      "output ($\\sigma \\to 1$ with $y = 0$) learns slowly under squared "
      "error, while the cross-entropy gradient stays $\\sigma - y \\to 1$.",
      eq(sp.Limit(Dot(s_z, 1 - s_z), zeta, sp.oo), 0),
      (Limit(),),
    ),
    Step(
      "The VJPs; the cotangent $g_i$ is elementwise.",
      Chain(label(r"\bar{z}_{i}"), g[i] * D(Cj[i], z[i]), Dot(g[i], s_i - y[i])),
      (General(), vjp_check(_bce_vector, z, g)),
      name="vjp_z",
      agrees=(
        Numeric(
          "VJP wrt logits", BCE, (i,), (*ZU, (g, COTANGENT)), by_vjp(0, 2), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{y}_{i}"), g[i] * D(Cj[i], y[i]), -g[i] * z[i]),
      (General(), vjp_check(_bce_vector, y, g)),
      name="vjp_y",
      agrees=(
        Numeric(
          "VJP wrt labels", BCE, (i,), (*ZU, (g, COTANGENT)), by_vjp(1, 2), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="sigmoid_binary_cross_entropy",
    title="Sigmoid binary cross-entropy",
    functions=("sigmoid_binary_cross_entropy",),
    intro=(
      "The article's remark on the learning slowdown: with a sigmoid output, "
      "cross-entropy's gradient is the error itself, while squared "
      "error's gradient carries a factor that vanishes when the unit "
      "saturates."
    ),
    ctx=BCE_CTX,
    steps=steps,
    headline=eq(D(Cj[i], z[i]), s_i - y[i]),
  )


def derivations() -> tuple[Derivation, ...]:
  return (
    softmax_cross_entropy_derivation(),
    label_smoothing_derivation(),
    soft_label_smoothing_derivation(),
    sigmoid_bce_derivation(),
  )


# ---------------------------------------------------------------------------
# Options, edges and dtypes: the cases jaxsmx's VJPs must agree on.


def _soft_ce_cases(by_key):
  fn = "softmax_cross_entropy"

  def terms(a_=0.0):
    if a_:
      k = "soft_label_smoothing"
      return (
        term(by_key[k], "vjp_z", (z, "logits"), (y, "labels"), (gs, "cot"), alpha=a_),
        term(by_key[k], "vjp_y", (z, "logits"), (y, "labels"), (gs, "cot"), alpha=a_),
      )
    k = "softmax_cross_entropy"
    return (
      term(by_key[k], "vjp_z", (z, "logits"), (y, "labels"), (gs, "cot")),
      term(by_key[k], "vjp_y", (z, "logits"), (y, "labels"), (gs, "cot")),
    )

  def value(a_):
    inputs = ((z, "logits"), (y, "labels"))
    if a_:
      return term(
        by_key["soft_label_smoothing"], "value", *inputs, index=None, alpha=a_
      )
    return term(by_key["softmax_cross_entropy"], "value", *inputs, index=None)

  def make(where=None, smooth=0.0, edge=False):
    def build(rng):
      x, lab = logits(rng), rng.uniform(0.1, 1.0, (ROWS, CLASSES))
      kw, keep = {}, None
      if smooth:
        kw["label_smoothing"] = smooth
      if where == "class":
        keep = class_mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = row_mask()
        keep = row_mask()[:, None]
      if edge:
        x[:, 3] = -np.inf  # zero probability, zero label: loss term 0
        lab[:, 3] = 0.0
        lab[1] = 0.0  # an all-zero label row
        x[2] = -np.inf  # an empty slice: loss 0, gradient 0
        return Problem(
          {"logits": x, "labels": lab}, kw, cotangent(rng), zero=np.arange(ROWS) == 2
        )
      return Problem({"logits": x, "labels": lab}, kw, cotangent(rng), keep=keep)

    return build

  out = []
  for option, kw in (
    ("plain", {}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("label_smoothing", {"smooth": 0.2}),
    ("label_smoothing, where per class", {"where": "class", "smooth": 0.2}),
  ):
    tz, ty = terms(kw.get("smooth", 0.0))
    v = value(kw.get("smooth", 0.0))
    out.append(Case(fn, option, "logits", make(**kw), tz, value=v))
    out.append(Case(fn, option, "labels", make(**kw), ty, value=v))
  tz, ty = terms()
  for wrt, t_ in (("logits", tz), ("labels", ty)):
    option = "-inf logit with label 0, zero labels, empty slice"
    out.append(Case(fn, option, wrt, make(edge=True), t_))
  return out


NARROW_CLASSES = 300  # more classes than a uint8 or int8 label can name


def _int_ce_cases(by_key):
  fn = "softmax_cross_entropy_with_integer_labels"

  def smoothed(a_):
    return term(
      by_key["label_smoothing"], "vjp_z", (z, "logits"), (gs, "cot"), alpha=a_
    )

  def make(
    smooth=0.0,
    where=None,
    ignore=False,
    masked_label=False,
    edge=False,
    narrow=None,
  ):
    def build(rng):
      if narrow is not None:  # (dtype, labels) against 300 classes
        x = logits(rng, (ROWS, NARROW_CLASSES))
        lab = np.array(narrow[1])
      else:
        x = logits(rng)
        lab = rng.integers(0, CLASSES, ROWS)
      kw, keep, zero = {}, None, np.zeros(ROWS, bool)
      if smooth:
        kw["label_smoothing"] = smooth
      if where == "class":
        keep = class_mask(rng)
        for r in range(ROWS - 1):  # a kept label, the last row empty
          lab[r] = rng.choice(np.flatnonzero(keep[r]))
        if masked_label:
          lab[1] = 1  # class 1 is masked in every row: the row is dropped
          zero[1] = True
        kw["where"] = keep
      elif where == "row":
        kw["where"] = row_mask()
        keep = row_mask()[:, None]
      if ignore:
        kw["ignore_index"] = -100
        lab[2] = -100
        zero[2] = True
      if edge:
        x[:, 4] = -np.inf
        lab = np.where(lab == 4, 0, lab)
        x[-1] = -np.inf
        zero[-1] = True
      prob = Problem({"logits": x}, kw, cotangent(rng), keep=keep, zero=zero)
      prob.kwargs["labels"] = lab.astype(np.int32 if narrow is None else narrow[0])
      prob.ell = np.where(lab < 0, 0, lab)
      return prob

    return build

  rows = (
    ("plain", {}),
    ("label_smoothing", {"smooth": 0.1}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per class, label masked out", {"where": "class", "masked_label": True}),
    ("where per class, label_smoothing", {"where": "class", "smooth": 0.3}),
    ("where per example", {"where": "row"}),
    ("ignore_index", {"ignore": True}),
    ("ignore_index, label_smoothing", {"ignore": True, "smooth": 0.2}),
    ("-inf logits, all -inf slice", {"edge": True}),
    ("uint8 labels up to 255, C = 300", {"narrow": (np.uint8, (255, 44, 130, 7))}),
    ("int8 labels up to 127, C = 300", {"narrow": (np.int8, (127, 44, 100, 0))}),
  )

  def value(a_):
    d = by_key["label_smoothing"]
    return term(d, "value", (z, "logits"), index=None, alpha=a_)

  out = []
  for o, kw in rows:
    a_ = kw.get("smooth", 0.0)
    v = None if kw.get("edge") else value(a_)
    out.append(Case(fn, o, "logits", make(**kw), smoothed(a_), value=v))
  return out


def _bce_cases(by_key):
  fn = "sigmoid_binary_cross_entropy"
  k = "sigmoid_binary_cross_entropy"

  def build(rng):
    c = rng.standard_normal((ROWS, CLASSES))
    c[0] = 0.0
    return Problem(
      {"logits": logits(rng), "labels": rng.uniform(0, 1, (ROWS, CLASSES))}, {}, c
    )

  return [
    Case(
      fn,
      "plain",
      "logits",
      build,
      term(by_key[k], "vjp_z", (z, "logits"), (y, "labels"), (g, "cot")),
    ),
    Case(
      fn,
      "plain",
      "labels",
      build,
      term(by_key[k], "vjp_y", (z, "logits"), (y, "labels"), (g, "cot")),
    ),
  ]


def cases(by_key) -> list[Case]:
  """The cross-entropy losses under every option and edge."""
  soft, bce = _soft_ce_cases(by_key), _bce_cases(by_key)
  integer = _int_ce_cases(by_key)
  return (
    soft
    + integer
    + bce
    + with_dtypes(soft, mixed=True)
    + with_dtypes(integer)
    + with_dtypes(bce, mixed=True)
  )
