r"""Poly-1 (Leng et al., 2022): the soft-label cross-entropy plus
:math:`\epsilon \sum_k y_k (1 - a_k)`, for symbolic :math:`n`."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import (
  CLASSES,
  ROWS,
  Case,
  Problem,
  Term,
  class_mask,
  cotangent,
  logits,
  row_mask,
  with_dtypes,
)
from .agreement.numeric import COTANGENT, LOGITS, WEIGHTS, Numeric, by_grad, by_vjp
from .engine import (
  Chain,
  Concrete,
  Context,
  D,
  Derivation,
  Dot,
  General,
  Step,
  Terms,
  a,
  eq,
  gradient_ref,
  i,
  j,
  k,
  label,
  softmax_of,
  summation,
  vec,
  vjp_check,
  y,
  z,
)
from .losses import CE_CTX

eps = sp.Symbol(r"\epsilon", real=True)
gs = sp.Symbol("g", real=True)  # the per-example cotangent
P = sp.Symbol("P")  # the Poly-1 loss of one example
POLY = "poly_loss_cross_entropy"
EPS = 2.0  # the value the numeric checks use (optax's default)

POLY_CTX = Context(
  {
    **CE_CTX.defs,
    P: -summation(y[k] * sp.log(a[k])) + eps * summation(y[k] * (1 - a[k])),
  },
  "a = softmax(z), P = -Σ y log a + ε Σ y (1 - a)",
)


def _poly_explicit(size: int) -> sp.Expr:
  zs, ys = vec(z, size), vec(y, size)
  total = sum(sp.exp(x) for x in zs)
  logs = [x - sp.log(total) for x in zs]
  probs = [sp.exp(x) / total for x in zs]
  ce = -sum(yv * lv for yv, lv in zip(ys, logs, strict=True))
  return ce + eps * sum(yv * (1 - pv) for yv, pv in zip(ys, probs, strict=True))


def _numeric(what, argnum, autodiff=by_vjp, cot=True):
  inputs = ((z, LOGITS), (y, WEIGHTS), *(((gs, COTANGENT),) if cot else ()))
  return Numeric(
    what,
    POLY,
    (i,),
    inputs,
    autodiff(argnum, 2, epsilon=EPS),
    "jax.vjp" if cot else "jax.grad",
    params={eps: EPS},
  )


def poly_derivation() -> Derivation:
  sum_y = summation(y[k])
  mean_a = summation(y[j] * a[j], j)
  dz = Terms(a[i] * sum_y, -y[i], -Dot(eps, a[i], Terms(y[i], -mean_a)))
  dy = Terms(-sp.log(a[i]), Dot(eps, 1 - a[i]))
  steps = (
    Step(
      "Poly-1 adds to the cross-entropy the first term of its expansion in "
      "$1 - a$, with its own coefficient $\\epsilon$ (optax: soft labels "
      "$y$, so the term is $\\sum_k y_k(1 - a_k)$, $1 - p_t$ for one-hot $y$).",
      eq(
        P,
        Terms(
          -summation(Dot(y[k], sp.log(a[k]))),
          Dot(eps, summation(Dot(y[k], 1 - a[k]))),
        ),
      ),
      role="definition",
    ),
    Step(
      "The new term's derivative: through the softmax Jacobian, "
      "$\\sum_k y_k a_k$ moves by $a_i$ times the label's excess over its "
      "$a$-weighted mean.",
      eq(D(mean_a, z[i]), Dot(a[i], Terms(y[i], -mean_a))),
      (General(),),
      ctx=Context({a: softmax_of(z)}),
    ),
    Step(
      "So the gradient with respect to the logits is the cross-entropy's "
      "$a_i \\sum_k y_k - y_i$ minus $\\epsilon$ times that.",
      eq(D(P, z[i]), dz),
      (General(), Concrete(gradient_ref(_poly_explicit, z), (i,))),
      name="grad_z",
      agrees=(_numeric("gradient wrt logits", 0, by_grad, cot=False),),
      role="result",
    ),
    Step(
      "With respect to the labels (the term is linear in $y$).",
      eq(D(P, y[i]), dy),
      (General(), Concrete(gradient_ref(_poly_explicit, y), (i,))),
      name="grad_y",
      agrees=(_numeric("gradient wrt labels", 1, by_grad, cot=False),),
      role="result",
    ),
    Step(
      "With respect to $\\epsilon$: the polynomial term itself.",
      eq(D(P, eps), summation(Dot(y[k], 1 - a[k]))),
      (General(),),
      name="grad_eps",
      role="result",
    ),
    Step(
      "The VJPs: one cotangent $g$ per example.",
      Chain(label(r"\bar{z}_{i}"), gs * D(P, z[i]), Dot(gs, dz)),
      (General(), vjp_check(_poly_explicit, z, gs)),
      name="vjp_z",
      agrees=(_numeric("VJP wrt logits", 0),),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{y}_{i}"), gs * D(P, y[i]), Dot(gs, dy)),
      (General(), vjp_check(_poly_explicit, y, gs)),
      name="vjp_y",
      agrees=(_numeric("VJP wrt labels", 1),),
      role="vjp",
    ),
  )
  return Derivation(
    key="poly_loss_cross_entropy",
    title="Poly-1 loss",
    functions=(POLY,),
    intro=(
      "PolyLoss (Leng et al., ICLR 2022) writes the cross-entropy as "
      "$\\sum_{j \\ge 1} (1 - p_t)^j / j$ and changes the first "
      "coefficient to $1 + \\epsilon$. In optax's soft-label form, the "
      "gradient is the cross-entropy's plus one rank-one softmax term."
    ),
    ctx=POLY_CTX,
    steps=steps,
    headline=eq(D(P, z[i]), dz),
  )


def derivations() -> tuple[Derivation, ...]:
  return (poly_derivation(),)


# ---------------------------------------------------------------------------
# Options, edges and dtypes.


def cases(by_key) -> list[Case]:
  """Poly-1 with masks, its edges and dtypes; the closed form on the slices."""
  d = by_key["poly_loss_cross_entropy"]

  def term(step, value):
    d.step(step)
    inputs = ((z, "logits"), (y, "labels"), (gs, "cot"))
    return Term(d.key, step, inputs, i, ((eps, value),), derivation=d)

  def make(where=None, edge=False, value=EPS):
    def build(rng):
      x, lab = logits(rng), rng.uniform(0.1, 1.0, (ROWS, CLASSES))
      kw, keep, zero = {"epsilon": value}, None, None
      if where == "class":
        keep = class_mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = row_mask()
        keep = row_mask()[:, None]
      if edge:
        x[:, 3] = -np.inf  # zero probability, zero label: no cost
        lab[:, 3] = 0.0
        lab[1] = 0.0  # an all-zero label row
        x[2] = -np.inf  # an empty slice: loss 0, gradient 0
        zero = np.arange(ROWS) == 2
      return Problem(
        {"logits": x, "labels": lab}, kw, cotangent(rng), keep=keep, zero=zero
      )

    return build

  out = []
  for option, kw in (
    ("plain", {}),
    ("epsilon = -1", {"value": -1.0}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("-inf logit with label 0, zero labels, empty slice", {"edge": True}),
  ):
    value = kw.get("value", EPS)
    for wrt, step in (("logits", "vjp_z"), ("labels", "vjp_y")):
      out.append(Case(POLY, option, wrt, make(**kw), term(step, value)))
  return out + with_dtypes(out, mixed=True)
