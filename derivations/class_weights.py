r"""Class weights (torch's ``weight=``) on the integer-label cross-entropy.

Each class :math:`k` has a weight :math:`w_k`. The label's term is weighted
by the label's class weight :math:`w_\ell` and, with label smoothing, each
class's smoothing term by its own weight: the loss is the soft-label
cross-entropy of the weighted target :math:`y_k = (1-\alpha) w_\ell
\delta_{k\ell} + \frac{\alpha}{n} w_k`, which no longer sums to one, so the
gradient keeps the factor :math:`\sum_k y_k` of :math:`a_i \sum_k y_k - y_i`.
The weights' gradient is the sum over the examples of each example's
:math:`\partial L/\partial w_k`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import sympy as sp

from .agreement.cases import (
  CLASSES,
  NO_CAP,
  ROWS,
  Case,
  Problem,
  class_mask,
  cotangent,
  logits,
  row_mask,
  sliced,
  sliced_value,
  term,
  with_dtypes,
)
from .agreement.numeric import COTANGENT, LOGITS, POSITIVE, Numeric
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
  ell,
  eq,
  gradient_ref,
  i,
  k,
  label,
  n,
  summation,
  u,
  vec,
  vjp_check,
  y,
  z,
)
from .losses import CE_CTX, _log_softmax_explicit

delta = sp.KroneckerDelta
alpha = sp.Symbol(r"\alpha", nonnegative=True)
gs = sp.Symbol("g", real=True)  # the per-example cotangent
w = sp.IndexedBase("w", positive=True)  # the class weights
L = sp.Symbol("L")  # the loss of one example
ICE = "softmax_cross_entropy_with_integer_labels"
ALPHA = 0.3  # the smoothing the numeric checks use

WEIGHTED_CTX = Context(
  {
    **CE_CTX.defs,
    y: lambda c: (1 - alpha) * w[ell] * delta(c, ell) + alpha / n * w[c],
    L: -summation(y[k] * sp.log(a[k])),
  },
  "a = softmax(z), y = (1 - α) w_ℓ onehot(ℓ) + α w / n, L = -Σ y log a",
)


def _label_of(size: int) -> dict:
  return {ell: (size + 1) // 2}


def _weighted_explicit(size: int) -> sp.Expr:
  logs = _log_softmax_explicit(size)
  ws = vec(w, size)
  lab = _label_of(size)[ell]
  return -(1 - alpha) * ws[lab - 1] * logs[lab - 1] - alpha / size * sum(
    wv * lv for wv, lv in zip(ws, logs, strict=True)
  )


def _by_vjp(argnum, smoothing):
  """jax.vjp of the loss of one example with label ⌈n/2⌉, class weights w."""

  def run(fn, z_, w_, g_):
    import jax
    import jax.numpy as jnp

    lab = jnp.asarray((z_.shape[-1] + 1) // 2 - 1, dtype=jnp.int32)

    def f(zz, ww):
      return fn(zz, lab, label_smoothing=smoothing, class_weights=ww)

    _, pull = jax.vjp(f, z_, w_)
    return pull(g_)[argnum]

  return run


def _numeric(what, argnum, smoothing):
  return Numeric(
    what,
    ICE,
    (i,),
    ((z, LOGITS), (w, POSITIVE), (gs, COTANGENT)),
    _by_vjp(argnum, smoothing),
    "jax.vjp",
    params={alpha: smoothing},
    extra=_label_of,
  )


def class_weights_derivation() -> Derivation:
  total = Terms(Dot(1 - alpha, w[ell]), Dot(alpha / n, summation(w[k])))
  dz = Terms(
    Dot(a[i], total), -Dot(1 - alpha, w[ell], delta(i, ell)), -Dot(alpha / n, w[i])
  )
  dw = Terms(
    -Dot(1 - alpha, delta(i, ell), sp.log(a[ell])), -Dot(alpha / n, sp.log(a[i]))
  )
  steps = (
    Step(
      "torch's `weight=` gives class $k$ the weight $w_k$: the label's term "
      "is weighted by $w_\\ell$ and, with label smoothing $\\alpha$, each "
      "class's share $\\alpha/n$ by its own $w_k$. The target is",
      eq(
        y[i],
        Terms(Dot(1 - alpha, w[ell], delta(i, ell)), Dot(alpha / n, w[i])),
      ),
      role="definition",
    ),
    Step(
      "So the loss is the label's weighted term plus the weighted smoothing "
      "term (torch's `cross_entropy(..., weight=w, label_smoothing=α, "
      "reduction='none')`).",
      Chain(
        L,
        -summation(Dot(y[k], sp.log(a[k]))),
        Terms(
          -Dot(1 - alpha, w[ell], sp.log(a[ell])),
          -Dot(alpha / n, summation(Dot(w[k], sp.log(a[k])))),
        ),
      ),
      (General(),),
      name="value",
    ),
    Step(
      "The weighted target does not sum to one: its total is",
      eq(summation(y[k]), total),
      (General(),),
    ),
    Step(
      "The softmax cross-entropy gradient $a_i \\sum_k y_k - y_i$ keeps that "
      "total; without weights ($w = 1$) it is 1 and this is the smoothed "
      "gradient $a_i - (1-\\alpha)\\delta_{i\\ell} - \\alpha/n$.",
      Chain(D(L, z[i]), Terms(a[i] * summation(y[k]), -y[i]), dz),
      (
        General(),
        Concrete(
          gradient_ref(_weighted_explicit, z),
          (i,),
          extra=_label_of,
          what="Matrix.jacobian (ℓ = ⌈n/2⌉)",
        ),
      ),
      name="grad_z",
      role="result",
    ),
    Step(
      "The loss is linear in the weights: $w_i$ meets $-\\log a_\\ell$ "
      "through the label's term when $i = \\ell$, and $-\\log a_i$ through "
      "the smoothing term.",
      eq(D(L, w[i]), dw),
      (
        General(),
        Concrete(
          gradient_ref(_weighted_explicit, w),
          (i,),
          extra=_label_of,
          what="Matrix.jacobian (ℓ = ⌈n/2⌉)",
        ),
      ),
      name="grad_w",
      role="result",
    ),
    Step(
      "The VJPs: one cotangent $g$ per example. Over a batch, the weights' "
      "VJP is the sum of the examples' $\\bar{w}_i$.",
      Chain(label(r"\bar{z}_{i}"), gs * D(L, z[i]), Dot(gs, dz)),
      (General(), vjp_check(_weighted_explicit, z, gs, extra=_label_of)),
      name="vjp_z",
      agrees=(
        _numeric("VJP wrt logits, α = 0", 0, 0.0),
        _numeric("VJP wrt logits, α = 0.3", 0, ALPHA),
      ),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{w}_{i}"), gs * D(L, w[i]), Dot(gs, dw)),
      (General(), vjp_check(_weighted_explicit, w, gs, extra=_label_of)),
      name="vjp_w",
      agrees=(
        _numeric("VJP wrt class_weights, α = 0", 1, 0.0),
        _numeric("VJP wrt class_weights, α = 0.3", 1, ALPHA),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="class_weights",
    title="Integer labels with class weights",
    functions=(ICE,),
    intro=(
      "`softmax_cross_entropy_with_integer_labels(..., class_weights=w)` is "
      "torch's `cross_entropy(..., weight=w, reduction='none')`, label "
      "smoothing included: torch weights the smoothing term class by class "
      "too. torch refuses the weights' gradient; jaxsmx gives it."
    ),
    ctx=WEIGHTED_CTX,
    steps=steps,
    headline=eq(D(L, z[i]), dz),
  )


def derivations() -> tuple[Derivation, ...]:
  return (class_weights_derivation(),)


# ---------------------------------------------------------------------------
# Options, edges and dtypes.


def _summed(t):
  """The class weights' gradient: the per-example closed form summed over
  the rows (0 on masked classes, dropped rows and zero cotangents)."""
  return lambda prob: sliced(t, prob).sum(0)


def cases(by_key) -> list[Case]:
  """Class weights with smoothing, masks, ignored labels and edges."""
  d = by_key["class_weights"]
  inputs = ((z, "logits"), (w, "class_weights"), (gs, "cot"))

  def make(smooth=0.0, where=None, ignore=False, edge=False):
    def build(rng):
      x = logits(rng)
      lab = rng.integers(0, CLASSES, ROWS)
      cw = rng.uniform(0.2, 3.0, CLASSES)
      kw, keep, zero = {"labels": None}, None, np.zeros(ROWS, bool)
      if smooth:
        kw["label_smoothing"] = smooth
      if where == "class":
        keep = class_mask(rng)
        for r in range(ROWS - 1):  # a kept label, the last row empty
          lab[r] = rng.choice(np.flatnonzero(keep[r]))
        kw["where"] = keep
      elif where == "row":
        kw["where"] = row_mask()
        keep = row_mask()[:, None]
      if ignore:
        kw["ignore_index"] = -100
        lab[2] = -100
        zero[2] = True
      if edge:  # a -inf logit off the label; a class of weight 0
        x[:, 4] = -np.inf
        lab = np.where(lab == 4, 0, lab)
        cw[3] = 0.0
      kw["labels"] = lab.astype(np.int32)
      args = {"logits": x, "class_weights": cw}
      prob = Problem(args, kw, cotangent(rng), keep=keep, zero=zero)
      prob.ell = np.where(lab < 0, 0, lab)
      return prob

    return build

  rows = (
    ("class_weights", {}),
    ("class_weights, label_smoothing", {"smooth": ALPHA}),
    ("class_weights, where per class, empty slice", {"where": "class"}),
    (
      "class_weights, where per class, label_smoothing",
      {"where": "class", "smooth": 0.2},
    ),
    ("class_weights, where per example", {"where": "row", "smooth": 0.1}),
    ("class_weights, ignore_index, label_smoothing", {"ignore": True, "smooth": 0.2}),
    ("class_weights, -inf logit, weight 0", {"edge": True}),
  )
  out = []
  for option, kw in rows:
    a_ = kw.get("smooth", 0.0)
    value = term(d, "value", *inputs[:2], index=None, alpha=a_)
    grad_z = term(d, "vjp_z", *inputs, alpha=a_)
    out.append(Case(ICE, option, "logits", make(**kw), grad_z, value=value))
    if not kw.get("edge"):  # d/dw_4 is infinite at the -inf logit
      grad_w = term(d, "vjp_w", *inputs, alpha=a_)
      out.append(
        Case(ICE, option, "class_weights", make(**kw), grad_w, expect=_summed(grad_w))
      )
  plain = ("class_weights", "class_weights, label_smoothing")
  return out + with_dtypes(out, plain)


# ---------------------------------------------------------------------------
# The fused loss with class weights: its expected value and gradients.


def linear_reference(by_key, setup, prob: Problem) -> dict[str, np.ndarray]:
  """The expected value and gradients of one fused-loss problem with class
  weights (derivations.linear's cases): this section's closed forms on the
  capped logits z = cap(x w + b), times the cap's derivative, plus the
  z-loss's terms (the fused loss's closed forms at λ less those at λ = 0),
  then the reduction, whose "mean" divides by the counted labels' weights
  (the quotient rule gives the class weights a second term)."""
  d, lin = by_key["class_weights"], by_key["linear_softmax_cross_entropy"]
  x, wm, cw = prob.args["x"], prob.args["w"], prob.args["class_weights"]
  n = x.shape[0]
  u_ = x @ wm + prob.args.get("bias", np.zeros(wm.shape[1]))
  c = setup.softcap
  z_ = u_ if c is None else c * np.tanh(u_ / c)
  slope = 1.0 if c is None else 1.0 - (z_ / c) ** 2
  on_z = Problem(
    {"z": z_, "class_weights": cw},
    {},
    np.ones(n),
    keep=prob.keep,
    zero=prob.zero,
    ell=prob.ell,
  )
  inputs = ((z, "z"), (w, "class_weights"), (gs, "cot"))
  a_ = setup.smooth
  dl_du = slope * sliced(term(d, "vjp_z", *inputs, alpha=a_), on_z)
  dl_dw = sliced(term(d, "vjp_w", *inputs, alpha=a_), on_z)
  losses = sliced_value(term(d, "value", *inputs[:2], index=None, alpha=a_), on_z)
  if setup.zl:
    on_u = dataclasses.replace(on_z, args={"u": u_})
    cap_ = c or NO_CAP
    for lam_, sign in ((setup.zl, 1.0), (0.0, -1.0)):
      grad = term(lin, "grad_u", (u, "u"), alpha=0.0, lam=lam_, cap=cap_)
      value = term(lin, "value", (u, "u"), index=None, alpha=0.0, lam=lam_, cap=cap_)
      dl_du = dl_du + sign * sliced(grad, on_u)
      losses = losses + sign * sliced_value(value, on_u)
  omega = prob.args.get("weights", np.ones(n))
  counted = ~np.asarray(prob.zero)
  w_t = np.where(counted, cw[prob.ell], 0.0)
  if setup.reduction == "none":
    r, out, d_omega = prob.cot * omega, omega * losses, prob.cot * losses
    d_cw = r @ dl_dw
  else:
    cot = float(prob.cot)
    mean = setup.reduction == "mean"
    total = float(np.sum(omega * w_t)) or 1.0 if mean else 1.0
    value_ = float(np.sum(omega * losses)) / total
    r = cot * omega / total
    out = np.asarray(value_)
    d_omega = cot * (losses - (w_t * value_ if mean else 0.0)) / total
    # d/dw_k of Σ ω L / D, D = Σ_counted ω w_t: Σ r ∂L/∂w_k - (M/D) Σ_{t=k} ω
    d_cw = r @ dl_dw
    if mean:
      by_label = np.bincount(prob.ell[counted], omega[counted], cw.shape[0])
      d_cw = d_cw - cot * value_ / total * by_label
  return linear_gradients(out, r[:, None] * dl_du, x, wm, d_omega, class_weights=d_cw)


def linear_gradients(value, ubar, x, w, d_omega, **extra) -> dict:
  """The fused loss's reference results from the logits' cotangent ubar: x̄ =
  ū Wᵀ, W̄ = xᵀ ū, b̄ = Σ ū, with the value, d/dω and any extra entries."""
  return {
    "value": value,
    "ubar": ubar,
    "x": ubar @ w.T,
    "w": x.T @ ubar,
    "bias": ubar.sum(0),
    "weights": d_omega,
    **extra,
  }
