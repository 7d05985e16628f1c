r"""Entropies: softmax_entropy, entropy, cross_entropy and kl_divergence."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import (
  Case,
  Problem,
  class_mask,
  cotangent,
  logits,
  probs,
  row_mask,
  term,
  with_dtypes,
)
from .agreement.numeric import (
  COTANGENT,
  LOGITS,
  POSITIVE,
  PROBS,
  AgreesWithJax,
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
  Dot,
  General,
  Group,
  Limit,
  Prod,
  Step,
  Terms,
  a,
  at,
  eq,
  explicit_softmax,
  gradient_ref,
  i,
  j,
  k,
  label,
  lp,
  named,
  p,
  q,
  softmax_of,
  summation,
  t,
  vec,
  vjp_check,
  z,
)

delta = sp.KroneckerDelta
H = sp.Symbol("H")
gs = sp.Symbol("g", real=True)
ENT = "H"
KL = r"\operatorname{KL}"
SE, CE, KLD = "softmax_entropy", "cross_entropy", "kl_divergence"


def _cross(*bases):
  # H(p) = -sum p log p; H(p, q) = -sum p log q.
  return -summation(bases[0][k] * sp.log(bases[-1][k]))


# ---------------------------------------------------------------------------
# softmax_entropy

SOFTMAX_ENTROPY_CTX = Context(
  {a: softmax_of(z), H: -summation(a[k] * sp.log(a[k]))},
  "a = softmax(z), H = -Σ a log a",
)


def _softmax_entropy_explicit(size: int) -> sp.Expr:
  av = explicit_softmax(size)
  zs = vec(z, size)
  total = sum(sp.exp(x) for x in zs)
  # log a_k written as z_k - log sum exp, as the library computes it.
  return -sum(av[r] * (zs[r] - sp.log(total)) for r in range(size))


def softmax_entropy_derivation() -> Derivation:
  hess = Terms(
    -Dot(delta(i, j), a[i], Terms(sp.log(a[i]), H, 1)),
    Dot(a[i], a[j], Terms(sp.log(a[i]), sp.log(a[j]), 2 * H, 1)),
  )
  steps = (
    Step(
      "The entropy of the softmax of the logits.",
      eq(H, -summation(Dot(a[k], sp.log(a[k])))),
      (
        AgreesWithJax(
          lambda jx, x: jx.softmax_entropy(x),
          ((z, LOGITS),),
          (),
          "jaxsmx.softmax_entropy",
        ),
      ),
      role="definition",
      name="value",
    ),
    Step(
      "The log-softmax derivative (see that section).",
      eq(D(sp.log(a[k]), z[i]), delta(i, k) - a[i]),
      (General(),),
    ),
    Step(
      "The product rule inside the sum.",
      eq(
        D(H, z[i]),
        -summation(
          Group(
            Terms(Dot(D(a[k], z[i]), sp.log(a[k])), Dot(a[k], D(sp.log(a[k]), z[i])))
          ),
        ),
      ),
      (General(),),
    ),
    Step(
      "Insert $\\partial a_k / \\partial z_i = a_k (\\delta_{ik} - a_i)$ "
      "and the line above.",
      eq(
        D(H, z[i]),
        Terms(
          -summation(Prod(a[k], delta(i, k) - a[i], sp.log(a[k]))),
          -summation(Prod(a[k], delta(i, k) - a[i])),
        ),
      ),
      (General(),),
    ),
    Step(
      "The second sum vanishes because the probabilities sum to one.",
      Chain(
        summation(Prod(a[k], delta(i, k) - a[i])),
        Terms(a[i], -a[i] * summation(a[k])),
        0,
      ),
      (General(),),
    ),
    Step(
      "The first sum gives the closed form.",
      Chain(
        D(H, z[i]),
        Terms(-Dot(a[i], sp.log(a[i])), Dot(a[i], summation(Dot(a[k], sp.log(a[k]))))),
        -Dot(a[i], Terms(sp.log(a[i]), H)),
      ),
      (
        General(),
        Concrete(
          gradient_ref(_softmax_entropy_explicit, z),
          (i,),
        ),
      ),
      name="grad",
      agrees=(Numeric("gradient", SE, (i,), ((z, LOGITS),), by_grad(), "jax.grad"),),
      role="result",
    ),
    Step(
      "**Second order.** Differentiate again with the same three facts; "
      "with $L_i = \\log a_i + H$ the Hessian is symmetric.",
      eq(D2(H, z[i], z[j]), hess),
      (
        General(),
        Concrete(
          lambda size: sp.hessian(_softmax_entropy_explicit(size), vec(z, size)),
          (i, j),
          sizes=tuple(range(1, 7)),
          what="sympy.hessian",
        ),
      ),
      name="hessian",
      agrees=(
        Numeric("Hessian", SE, (i, j), ((z, LOGITS),), by_hessian(), "jax.hessian"),
      ),
      role="result",
    ),
    Step(
      "The VJP scales the gradient by the per-slice cotangent.",
      Chain(
        label(r"\bar{z}_{i}"), gs * D(H, z[i]), -Dot(gs, a[i], Terms(sp.log(a[i]), H))
      ),
      (General(), vjp_check(_softmax_entropy_explicit, z, gs)),
      name="vjp",
      agrees=(
        Numeric("VJP", SE, (i,), ((z, LOGITS), (gs, COTANGENT)), by_vjp(), "jax.vjp"),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="softmax_entropy",
    title="Softmax entropy",
    functions=("softmax_entropy",),
    intro=(
      "The entropy of a softmax output, as a function of the logits. "
      "The same three facts as the article's derivation (the softmax "
      "Jacobian, the log-softmax Jacobian, and $\\sum_k a_k = 1$) give "
      "its gradient and Hessian."
    ),
    ctx=SOFTMAX_ENTROPY_CTX,
    steps=steps,
    headline=eq(D(H, z[i]), -Dot(a[i], Terms(sp.log(a[i]), H))),
  )


# ---------------------------------------------------------------------------
# entropy(p)

PROBS_CTX = Context(
  {ENT: _cross, KL: lambda lb, tb: summation(tb[k] * (sp.log(tb[k]) - lb[k]))},
  "H(p) = -Σ p log p, H(p, q) = -Σ p log q",
)


def _entropy_explicit(size: int) -> sp.Expr:
  return -sum(x * sp.log(x) for x in vec(p, size))


def entropy_derivation() -> Derivation:
  hp = named(ENT, p)
  x = sp.Symbol("x", positive=True)
  steps = (
    Step(
      "The Shannon entropy of a distribution $p$.",
      eq(hp, -summation(Dot(p[k], sp.log(p[k])))),
      (
        AgreesWithJax(lambda jx, x: jx.entropy(x), ((p, PROBS),), (), "jaxsmx.entropy"),
      ),
      role="definition",
      name="value",
    ),
    Step(
      "The convention $0 \\log 0 = 0$ is a limit, so a zero probability "
      "contributes nothing and the function is continuous there.",
      eq(sp.Limit(x * sp.log(x), x, 0, "+"), 0),
      (Limit(),),
    ),
    Step(
      "Only the $k = i$ term depends on $p_i$.",
      eq(D(hp, p[i]), Terms(-sp.log(p[i]), -1)),
      (
        General(),
        Concrete(gradient_ref(_entropy_explicit, p), (i,)),
      ),
      name="grad",
      agrees=(
        Numeric("gradient", "entropy", (i,), ((p, PROBS),), by_grad(), "jax.grad"),
      ),
      role="result",
    ),
    Step(
      "The gradient is unbounded at $p_i = 0$, where the entropy is still finite.",
      eq(sp.Limit(-(sp.log(x) + 1), x, 0, "+"), sp.oo),
      (Limit(),),
    ),
    Step(
      "The Hessian is diagonal and negative: entropy is concave.",
      eq(D2(hp, p[i], p[j]), -delta(i, j) / p[i]),
      (
        General(),
        Concrete(
          lambda size: sp.hessian(_entropy_explicit(size), vec(p, size)),
          (i, j),
          what="sympy.hessian",
        ),
      ),
      name="hessian",
      agrees=(
        Numeric(
          "Hessian", "entropy", (i, j), ((p, PROBS),), by_hessian(), "jax.hessian"
        ),
      ),
      role="result",
    ),
    Step(
      "The VJP.",
      Chain(label(r"\bar{p}_{i}"), gs * D(hp, p[i]), -Dot(gs, Terms(sp.log(p[i]), 1))),
      (General(), vjp_check(_entropy_explicit, p, gs)),
      name="vjp",
      agrees=(
        Numeric(
          "VJP", "entropy", (i,), ((p, POSITIVE), (gs, COTANGENT)), by_vjp(), "jax.vjp"
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="entropy",
    title="Entropy",
    functions=("entropy",),
    intro="The article's $H(p) = -\\sum_i p_i \\log p_i$, on probabilities.",
    ctx=PROBS_CTX,
    steps=steps,
    headline=eq(D(hp, p[i]), Terms(-sp.log(p[i]), -1)),
  )


# ---------------------------------------------------------------------------
# cross_entropy(p, q)


def _cross_explicit(size: int) -> sp.Expr:
  return -sum(
    pv * sp.log(qv) for pv, qv in zip(vec(p, size), vec(q, size), strict=True)
  )


def cross_entropy_derivation() -> Derivation:
  hpq = named(ENT, p, q)
  lag = sp.Symbol(r"\mathcal{L}")
  lam = sp.Symbol(r"\lambda", real=True)
  lagrange_ctx = Context(
    {**PROBS_CTX.defs, lag: hpq + lam * (summation(q[k]) - 1)},
  )
  steps = (
    Step(
      "The cross-entropy of an estimate $q$ against the true $p$.",
      eq(hpq, -summation(Dot(p[k], sp.log(q[k])))),
      (
        AgreesWithJax(
          lambda jx, x, w: jx.cross_entropy(x, w),
          ((p, PROBS), (q, PROBS)),
          (),
          "jaxsmx.cross_entropy",
        ),
      ),
      role="definition",
      name="value",
    ),
    Step(
      "With respect to the true distribution.",
      eq(D(hpq, p[i]), -sp.log(q[i])),
      (
        General(),
        Concrete(gradient_ref(_cross_explicit, p), (i,)),
      ),
      name="grad_p",
      agrees=(
        Numeric(
          "gradient wrt p",
          CE,
          (i,),
          ((p, PROBS), (q, PROBS)),
          by_grad(0, 2),
          "jax.grad",
        ),
      ),
      role="result",
    ),
    Step(
      "With respect to the estimate.",
      eq(D(hpq, q[i]), -p[i] / q[i]),
      (
        General(),
        Concrete(gradient_ref(_cross_explicit, q), (i,)),
      ),
      name="grad_q",
      agrees=(
        Numeric(
          "gradient wrt q",
          CE,
          (i,),
          ((p, PROBS), (q, PROBS)),
          by_grad(1, 2),
          "jax.grad",
        ),
      ),
      role="result",
    ),
    Step(
      "The article's remark: over distributions $q$ the minimum is at "
      "$q = p$. With a multiplier for $\\sum_k q_k = 1$, the Lagrangian "
      "$\\mathcal{L} = H(p, q) + \\lambda (\\sum_k q_k - 1)$ is stationary "
      "there, with $\\lambda = 1$ ...",
      eq(at(D(lag, q[i]), (q, p), (lam, 1)), 0),
      (General(),),
      ctx=lagrange_ctx,
    ),
    Step(
      "... the Hessian in $q$ is positive definite, so it is a minimum ...",
      eq(D2(hpq, q[i], q[j]), delta(i, j) * p[i] / q[i] ** 2),
      (General(),),
    ),
    Step(
      "... and its value is the entropy.",
      eq(at(hpq, (q, p)), named(ENT, p)),
      (General(),),
    ),
    Step(
      "The VJPs.",
      Chain(label(r"\bar{p}_{i}"), gs * D(hpq, p[i]), -gs * sp.log(q[i])),
      (General(), vjp_check(_cross_explicit, p, gs)),
      name="vjp_p",
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{q}_{i}"), gs * D(hpq, q[i]), -gs * p[i] / q[i]),
      (General(), vjp_check(_cross_explicit, q, gs)),
      name="vjp_q",
      agrees=(
        Numeric(
          "VJP wrt q",
          CE,
          (i,),
          ((p, POSITIVE), (q, POSITIVE), (gs, COTANGENT)),
          by_vjp(1, 2),
          "jax.vjp",
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="cross_entropy",
    title="Cross-entropy of two distributions",
    functions=("cross_entropy",),
    intro="The article's $H(p, q) = -\\sum_i p_i \\log q_i$, on probabilities.",
    ctx=PROBS_CTX,
    steps=steps,
    headline=eq(D(hpq, q[i]), -p[i] / q[i]),
  )


# ---------------------------------------------------------------------------
# kl_divergence(log_predictions, targets)


def _kl_explicit(size: int) -> sp.Expr:
  return sum(
    tv * (sp.log(tv) - lv) for lv, tv in zip(vec(lp, size), vec(t, size), strict=True)
  )


def kl_divergence_derivation() -> Derivation:
  kl = named(KL, lp, t)
  x = sp.Symbol("x", positive=True)
  c = sp.Symbol("c", real=True)
  steps = (
    Step(
      "jaxsmx takes the predictions as logs, $\\ell = \\log q$, and the "
      "targets $t$ as probabilities.",
      eq(kl, summation(Prod(t[k], sp.log(t[k]) - lp[k]))),
      (
        AgreesWithJax(
          lambda jx, x, w: jx.kl_divergence(x, w),
          ((lp, LOGITS), (t, PROBS)),
          (),
          "jaxsmx.kl_divergence",
        ),
      ),
      role="definition",
      name="value",
    ),
    Step(
      "A zero target contributes nothing, by the same limit as for entropy.",
      eq(sp.Limit(x * (sp.log(x) - c), x, 0, "+"), 0),
      (Limit(),),
    ),
    Step(
      "With $\\ell = \\log q$ it is the cross-entropy minus the entropy "
      "(the article's relative entropy), so it is zero at $q = t$.",
      eq(kl, Terms(named(ENT, t, q), -named(ENT, t))),
      (General(why="ℓ = log q"),),
      ctx=Context({**PROBS_CTX.defs, lp: lambda idx: sp.log(q[idx])}),
    ),
    Step(
      "With respect to the log-predictions.",
      eq(D(kl, lp[i]), -t[i]),
      (
        General(),
        Concrete(gradient_ref(_kl_explicit, lp), (i,)),
      ),
      name="grad_l",
      agrees=(
        Numeric(
          "gradient wrt log-predictions",
          KLD,
          (i,),
          ((lp, LOGITS), (t, PROBS)),
          by_grad(0, 2),
          "jax.grad",
        ),
      ),
      role="result",
    ),
    Step(
      "With respect to the targets.",
      eq(D(kl, t[i]), Terms(sp.log(t[i]), 1, -lp[i])),
      (
        General(),
        Concrete(gradient_ref(_kl_explicit, t), (i,)),
      ),
      name="grad_t",
      agrees=(
        Numeric(
          "gradient wrt targets",
          KLD,
          (i,),
          ((lp, LOGITS), (t, PROBS)),
          by_grad(1, 2),
          "jax.grad",
        ),
      ),
      role="result",
    ),
    Step(
      "The VJPs.",
      Chain(label(r"\bar{\ell}_{i}"), gs * D(kl, lp[i]), -gs * t[i]),
      (General(), vjp_check(_kl_explicit, lp, gs)),
      name="vjp_l",
      role="vjp",
    ),
    Step(
      "",
      Chain(
        label(r"\bar{t}_{i}"), gs * D(kl, t[i]), Dot(gs, Terms(sp.log(t[i]), 1, -lp[i]))
      ),
      (General(), vjp_check(_kl_explicit, t, gs)),
      name="vjp_t",
      agrees=(
        Numeric(
          "VJP wrt targets",
          KLD,
          (i,),
          ((lp, LOGITS), (t, POSITIVE), (gs, COTANGENT)),
          by_vjp(1, 2),
          "jax.vjp",
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="kl_divergence",
    title="Kullback-Leibler divergence",
    functions=("kl_divergence",),
    intro="The relative entropy the article links to, in optax's argument order.",
    ctx=PROBS_CTX,
    steps=steps,
    headline=eq(D(kl, t[i]), Terms(sp.log(t[i]), 1, -lp[i])),
  )


def derivations() -> tuple[Derivation, ...]:
  return (
    softmax_entropy_derivation(),
    entropy_derivation(),
    cross_entropy_derivation(),
    kl_divergence_derivation(),
  )


# ---------------------------------------------------------------------------
# Options, edges and dtypes: the cases jaxsmx's VJPs must agree on.


def _second_order(build):
  """The problem of ``build`` with a random direction for a second-order case."""

  def with_direction(rng):
    prob = build(rng)
    prob.direction = rng.standard_normal(prob.args["logits"].shape)
    return prob

  return with_direction


def _entropy_family(by_key):
  out = []

  def se(where=None, edge=False):
    def build(rng):
      x, kw, keep = logits(rng), {}, None
      if where == "class":
        keep = class_mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = row_mask()[:, None]
      if edge:
        keep = np.ones(x.shape, bool)
        x[:, 2] = -np.inf
        x[-1] = -np.inf
        keep[:, 2] = False  # probability 0: its class drops out (the limit)
        keep[-1] = False
      return Problem({"logits": x}, kw, cotangent(rng), keep=keep)

    return build

  tse = term(by_key["softmax_entropy"], "vjp", (z, "logits"), (gs, "cot"))
  fn = "softmax_entropy"
  vse = term(by_key["softmax_entropy"], "value", (z, "logits"), index=None)
  out += [
    Case(fn, "plain", "logits", se(), tse, value=vse),
    Case(fn, "where per class, empty slice", "logits", se("class"), tse, value=vse),
    Case(fn, "where per example", "logits", se("row"), tse, value=vse),
    Case(fn, "-inf logits, all -inf slice", "logits", se(edge=True), tse),
    Case(
      fn,
      "-inf logits, all -inf slice, second order",
      "logits",
      _second_order(se(edge=True)),
      term(by_key["softmax_entropy"], "hessian", (z, "logits"), index=(i, j)),
      order=2,
    ),
  ]

  def ent(where=None, edge=False):
    def build(rng):
      pr, kw, keep = probs(rng), {}, None
      if where == "class":
        keep = class_mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = row_mask()[:, None]
      if edge:
        pr[:, 1] = 0.0  # d/dp of -p log p at 0 is +inf: the one-sided limit
      return Problem({"probs": pr}, kw, cotangent(rng), keep=keep)

    return build

  te = term(by_key["entropy"], "vjp", (p, "probs"), (gs, "cot"))
  fn = "entropy"
  ve = term(by_key["entropy"], "value", (p, "probs"), index=None)
  out += [
    Case(fn, "plain", "probs", ent(), te, value=ve),
    Case(fn, "where per class, empty slice", "probs", ent("class"), te, value=ve),
    Case(fn, "where per example", "probs", ent("row"), te, value=ve),
    Case(fn, "zero probabilities (0 log 0 = 0)", "probs", ent(edge=True), te),
  ]

  def two(names, draw, where=None, edge=None):
    def build(rng):
      a_, b_ = draw(rng)
      kw, keep, fix = {}, None, None
      if where == "class":
        keep = class_mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = row_mask()[:, None]
      if edge == "ce":
        a_[:, 2] = 0.0  # p = 0: the term and its q-gradient are 0
        a_[:, 4], b_[:, 4] = 0.0, 0.0  # p = q = 0: 0, not 0/0

        def fix(e, prob):
          return np.where(prob.args["p"] == 0, 0.0, e) if case_wrt[0] == "q" else e

      if edge == "kl":
        b_[:, 2] = 0.0  # t = 0: the term is 0, its t-gradient -inf
      return Problem(
        dict(zip(names, (a_, b_), strict=True)), kw, cotangent(rng), keep=keep, fix=fix
      )

    case_wrt = [""]
    return build, case_wrt

  fn = "cross_entropy"
  tp = term(by_key["cross_entropy"], "vjp_p", (p, "p"), (q, "q"), (gs, "cot"))
  tq = term(by_key["cross_entropy"], "vjp_q", (p, "p"), (q, "q"), (gs, "cot"))
  vce = term(by_key["cross_entropy"], "value", (p, "p"), (q, "q"), index=None)
  for option, kw in (
    ("plain", {}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("zero p, zero p and q", {"edge": "ce"}),
  ):
    for wrt, t_ in (("p", tp), ("q", tq)):
      build, w = two(("p", "q"), lambda r: (probs(r), probs(r)), **kw)
      w[0] = wrt
      value = None if "edge" in kw else vce
      out.append(Case(fn, option, wrt, build, t_, value=value))

  fn = "kl_divergence"
  tl = term(
    by_key["kl_divergence"],
    "vjp_l",
    (lp, "log_predictions"),
    (t, "targets"),
    (gs, "cot"),
  )
  tt = term(
    by_key["kl_divergence"],
    "vjp_t",
    (lp, "log_predictions"),
    (t, "targets"),
    (gs, "cot"),
  )
  vkl = term(
    by_key["kl_divergence"],
    "value",
    (lp, "log_predictions"),
    (t, "targets"),
    index=None,
  )
  for option, kw in (
    ("plain", {}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("zero targets", {"edge": "kl"}),
  ):
    for wrt, t_ in (("log_predictions", tl), ("targets", tt)):
      build, _ = two(
        ("log_predictions", "targets"), lambda r: (np.log(probs(r)), probs(r)), **kw
      )
      value = None if "edge" in kw else vkl
      out.append(Case(fn, option, wrt, build, t_, value=value))
  return out


def cases(by_key) -> list[Case]:
  """The entropies under every option and edge."""
  base = _entropy_family(by_key)
  mixed = [c for c in base if c.function in (CE, KLD)]
  single = [c for c in base if c.function not in (CE, KLD)]
  return base + with_dtypes(single) + with_dtypes(mixed, mixed=True)
