r"""The rest of the KL family: log-targets and the generalized (convex) KL.

``kl_divergence_with_log_targets`` takes the targets as logs
:math:`\tau = \log t`; ``convex_kl_divergence`` drops the normalization and
adds :math:`\sum_k (q_k - t_k)`. Both are sums over the classes, derived for
symbolic :math:`n`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import (
  Case,
  Problem,
  class_mask,
  cotangent,
  probs,
  row_mask,
  with_dtypes,
)
from .agreement.cases import term as make_term
from .agreement.numeric import (
  COTANGENT,
  LOGITS,
  POSITIVE,
  PROBS,
  AgreesWithJax,
  Numeric,
  by_grad,
  by_vjp,
)
from .engine import (
  Chain,
  Concrete,
  Context,
  D,
  Derivation,
  Dot,
  General,
  Limit,
  Prod,
  Step,
  Terms,
  eq,
  gradient_ref,
  i,
  k,
  label,
  lp,
  named,
  summation,
  t,
  vec,
  vjp_check,
)

tau = sp.IndexedBase(r"\tau", real=True)  # log-targets
gs = sp.Symbol("g", real=True)
KL = r"\operatorname{KL}"
GKL = r"\operatorname{KL}_{\mathrm{gen}}"
KLT = "kl_divergence_with_log_targets"
CKL = "convex_kl_divergence"

LOG_CTX = Context(
  {KL: lambda lb, tb: summation(sp.exp(tb[k]) * (tb[k] - lb[k]))},
  "KL(ℓ, τ) = Σ e^τ (τ - ℓ)",
)


def _generalized(lb, tb):
  return summation(tb[k] * (sp.log(tb[k]) - lb[k])) + summation(sp.exp(lb[k]) - tb[k])


CONVEX_CTX = Context(
  {GKL: _generalized},
  "KL_gen(ℓ, t) = Σ t (log t - ℓ) + Σ (e^ℓ - t)",
)


# ---------------------------------------------------------------------------
# kl_divergence_with_log_targets


def _kl_log_explicit(size: int) -> sp.Expr:
  return sum(
    sp.exp(tv) * (tv - lv) for lv, tv in zip(vec(lp, size), vec(tau, size), strict=True)
  )


def _numeric(fn, what, argnum, inputs, cot=False):
  if cot:
    return Numeric(
      what, fn, (i,), (*inputs, (gs, COTANGENT)), by_vjp(argnum, 2), "jax.vjp"
    )
  return Numeric(what, fn, (i,), inputs, by_grad(argnum, 2), "jax.grad")


LOG_INPUTS = ((lp, LOGITS), (tau, LOGITS))


def kl_log_targets_derivation() -> Derivation:
  kl = named(KL, lp, tau)
  x = sp.Symbol("x", real=True)
  c = sp.Symbol("c", real=True)
  dl = -sp.exp(tau[i])
  dtau = Dot(sp.exp(tau[i]), Terms(tau[i], 1, -lp[i]))
  steps = (
    Step(
      "The targets arrive as logs, $\\tau = \\log t$ (a teacher's "
      "log-softmax), the predictions as $\\ell = \\log q$.",
      eq(kl, summation(Prod(sp.exp(tau[k]), tau[k] - lp[k]))),
      (
        AgreesWithJax(
          lambda jx, x, w: jx.kl_divergence_with_log_targets(x, w),
          LOG_INPUTS,
          (),
          "jaxsmx.kl_divergence_with_log_targets",
        ),
      ),
      role="definition",
    ),
    Step(
      "A target of probability 0 ($\\tau \\to -\\infty$) contributes "
      "nothing, and neither does its derivative: in log space both limits "
      "are 0.",
      eq(sp.Limit(sp.exp(x) * (x - c + 1), x, -sp.oo), 0),
      (Limit(),),
    ),
    Step(
      "With respect to the log-predictions: the targets, with a minus sign.",
      eq(D(kl, lp[i]), dl),
      (General(), Concrete(gradient_ref(_kl_log_explicit, lp), (i,))),
      name="grad_l",
      agrees=(_numeric(KLT, "gradient wrt log-predictions", 0, LOG_INPUTS),),
      role="result",
    ),
    Step(
      "With respect to the log-targets: kl_divergence's "
      "$\\log t + 1 - \\ell$, times $\\partial t / \\partial\\tau = t$.",
      eq(D(kl, tau[i]), dtau),
      (General(), Concrete(gradient_ref(_kl_log_explicit, tau), (i,))),
      name="grad_tau",
      agrees=(_numeric(KLT, "gradient wrt log-targets", 1, LOG_INPUTS),),
      role="result",
    ),
    Step(
      "The VJPs.",
      Chain(label(r"\bar{\ell}_{i}"), gs * D(kl, lp[i]), Dot(gs, dl)),
      (General(), vjp_check(_kl_log_explicit, lp, gs)),
      name="vjp_l",
      agrees=(_numeric(KLT, "VJP wrt log-predictions", 0, LOG_INPUTS, cot=True),),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{\tau}_{i}"), gs * D(kl, tau[i]), Dot(gs, dtau)),
      (General(), vjp_check(_kl_log_explicit, tau, gs)),
      name="vjp_tau",
      agrees=(_numeric(KLT, "VJP wrt log-targets", 1, LOG_INPUTS, cot=True),),
      role="vjp",
    ),
  )
  return Derivation(
    key=KLT,
    title="Kullback-Leibler divergence with log-targets",
    functions=(KLT,),
    intro=(
      "Distillation compares a student's log-probabilities with a "
      "teacher's; optax's `kl_divergence_with_log_targets` takes both as "
      "logs. optax forms $e^{\\tau}(\\tau - \\ell)$ directly, which is NaN "
      "for a zero target ($0 \\cdot \\infty$); jaxsmx uses the limit."
    ),
    ctx=LOG_CTX,
    steps=steps,
    headline=eq(D(kl, tau[i]), dtau),
  )


# ---------------------------------------------------------------------------
# convex_kl_divergence


def _convex_explicit(size: int) -> sp.Expr:
  return sum(
    tv * (sp.log(tv) - lv) + sp.exp(lv) - tv
    for lv, tv in zip(vec(lp, size), vec(t, size), strict=True)
  )


CONVEX_INPUTS = ((lp, LOGITS), (t, POSITIVE))


def convex_kl_derivation() -> Derivation:
  gkl = named(GKL, lp, t)
  dl = Terms(sp.exp(lp[i]), -t[i])
  dt = Terms(sp.log(t[i]), -lp[i])
  steps = (
    Step(
      "For unnormalized $t, q = e^{\\ell}$ the KL gets the correction "
      "$\\sum_k (q_k - t_k)$: the Bregman divergence of $x \\log x - x$.",
      eq(
        gkl,
        Terms(
          summation(Prod(t[k], sp.log(t[k]) - lp[k])),
          summation(Terms(sp.exp(lp[k]), -t[k])),
        ),
      ),
      (
        AgreesWithJax(
          lambda jx, x, w: jx.convex_kl_divergence(x, w),
          CONVEX_INPUTS,
          (),
          "jaxsmx.convex_kl_divergence",
        ),
      ),
      role="definition",
    ),
    Step(
      "It vanishes at $t = q$, normalized or not.",
      eq(gkl, 0),
      (General(why="t = e^ℓ"),),
      ctx=Context({GKL: _generalized, t: lambda idx: sp.exp(lp[idx])}),
    ),
    Step(
      "With respect to the log-predictions: kl_divergence's $-t_i$ plus $q_i$.",
      eq(D(gkl, lp[i]), dl),
      (General(), Concrete(gradient_ref(_convex_explicit, lp), (i,))),
      name="grad_l",
      agrees=(_numeric(CKL, "gradient wrt log-predictions", 0, CONVEX_INPUTS),),
      role="result",
    ),
    Step(
      "With respect to the targets: kl_divergence's $\\log t_i + 1 - "
      "\\ell_i$ minus 1 (at $t_i = 0$ the same one-sided limit, "
      "$-\\infty$).",
      eq(D(gkl, t[i]), dt),
      (General(), Concrete(gradient_ref(_convex_explicit, t), (i,))),
      name="grad_t",
      agrees=(_numeric(CKL, "gradient wrt targets", 1, CONVEX_INPUTS),),
      role="result",
    ),
    Step(
      "The VJPs.",
      Chain(label(r"\bar{\ell}_{i}"), gs * D(gkl, lp[i]), Dot(gs, dl)),
      (General(), vjp_check(_convex_explicit, lp, gs)),
      name="vjp_l",
      agrees=(_numeric(CKL, "VJP wrt log-predictions", 0, CONVEX_INPUTS, cot=True),),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{t}_{i}"), gs * D(gkl, t[i]), Dot(gs, dt)),
      (General(), vjp_check(_convex_explicit, t, gs)),
      name="vjp_t",
      agrees=(
        _numeric(CKL, "VJP wrt targets", 1, ((lp, LOGITS), (t, PROBS)), cot=True),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key=CKL,
    title="Generalized (convex) Kullback-Leibler divergence",
    functions=(CKL,),
    intro=(
      "optax's `convex_kl_divergence` (since renamed "
      "`generalized_kl_divergence`) compares unnormalized non-negative "
      "measures; its gradient is the KL's plus one elementwise term. jaxsmx's "
      "rule calls kl_divergence's and adds it."
    ),
    ctx=CONVEX_CTX,
    steps=steps,
    headline=eq(D(gkl, lp[i]), dl),
  )


def derivations() -> tuple[Derivation, ...]:
  return (kl_log_targets_derivation(), convex_kl_derivation())


# ---------------------------------------------------------------------------
# Options, edges and dtypes.


def _build(names, draw, where=None, edge=None):
  def build(rng):
    a_, b_ = draw(rng)
    kw, keep, fix = {}, None, None
    if where == "class":
      keep = class_mask(rng)
      kw["where"] = keep
    elif where == "row":
      kw["where"] = keep = row_mask()[:, None]
    if edge == "log":
      b_[:, 2] = -np.inf  # t = 0: the term and both gradients are 0

      def fix(e, prob):
        return np.where(np.isneginf(prob.args["log_targets"]), 0.0, e)

    if edge == "convex":
      b_[:, 2] = 0.0  # t = 0: the t log t term is 0, its t-gradient -inf
    args = dict(zip(names, (a_, b_), strict=True))
    return Problem(args, kw, cotangent(rng), keep=keep, fix=fix)

  return build


def cases(by_key) -> list[Case]:
  """Both functions with masks, at zero targets, in float32 and bfloat16."""
  out = []
  for fn, names, draw, steps, edge in (
    (
      KLT,
      ("log_predictions", "log_targets"),
      lambda r: (np.log(probs(r)), np.log(probs(r))),
      ("vjp_l", "vjp_tau"),
      ("zero targets (log t = -inf)", "log"),
    ),
    (
      CKL,
      ("log_predictions", "targets"),
      lambda r: (np.log(probs(r)), 2.0 * probs(r)),
      ("vjp_l", "vjp_t"),
      ("zero targets", "convex"),
    ),
  ):
    second = tau if fn == KLT else t
    terms = [
      make_term(by_key[fn], s, (lp, names[0]), (second, names[1]), (gs, "cot"))
      for s in steps
    ]
    for option, kw in (
      ("plain", {}),
      ("where per class, empty slice", {"where": "class"}),
      ("where per example", {"where": "row"}),
      (edge[0], {"edge": edge[1]}),
    ):
      for wrt, term in zip(names, terms, strict=True):
        out.append(Case(fn, option, wrt, _build(names, draw, **kw), term))
  return out + with_dtypes(out, mixed=True)
