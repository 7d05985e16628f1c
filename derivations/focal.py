r"""Sigmoid losses beyond the plain BCE: ``pos_weight`` and the focal loss.

Both are elementwise, so each derivation works with one element :math:`i`.
The focal loss's factor :math:`u^\gamma`, :math:`u = 1 - p_t`, is
differentiated at general :math:`\gamma`; the steps show why the gradient
stays bounded for :math:`0 < \gamma < 1` although :math:`\gamma u^{\gamma-1}`
alone is not: it always meets :math:`\sigma(1 - \sigma)`, and
:math:`\sigma(1 - \sigma) / u` is a sigmoid for a hard label.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import CLASSES, ROWS, Case, Problem, Term, logits, with_dtypes
from .agreement.numeric import COTANGENT, LOGITS, POSITIVE, UNIT, Numeric, by_vjp
from .engine import (
  Chain,
  Context,
  D,
  Derivation,
  Dot,
  General,
  Limit,
  Step,
  Terms,
  eq,
  g,
  i,
  label,
  vec,
  vjp_check,
  y,
  z,
)
from .losses import BCE_CTX, Cj, sigma

alpha = sp.Symbol(r"\alpha", nonnegative=True)
gamma = sp.Symbol(r"\gamma", positive=True)
w = sp.IndexedBase("w", positive=True)  # pos_weight, elementwise
u = sp.IndexedBase("u")  # 1 - p_t
at_ = sp.IndexedBase(r"\alpha_t")
L = sp.IndexedBase("L")  # the focal loss of one element
Cw = sp.IndexedBase(r"C^{w}")  # the weighted BCE of one element
BCE = "sigmoid_binary_cross_entropy"
FOCAL = "sigmoid_focal_loss"
ALPHA, GAMMA = 0.25, 1.5  # the values the numeric checks use


# ---------------------------------------------------------------------------
# pos_weight


def _weighted_explicit(wrt):
  def build(size):
    out = []
    for zv, yv, wv in zip(vec(z, size), vec(y, size), vec(w, size), strict=True):
      s = 1 / (1 + sp.exp(-zv))
      out.append(-wv * yv * sp.log(s) - (1 - yv) * sp.log(1 - s))
    return sp.Matrix(out)

  return build


def _bce_kw(wrt):
  """jax.vjp of sigmoid_binary_cross_entropy(z, y, pos_weight=w), wrt ``wrt``."""

  def run(fn, *xs):
    return by_vjp(wrt, 3)(lambda a, b, c: fn(a, b, pos_weight=c), *xs)

  return run


WEIGHTED_CTX = Context(
  {
    **BCE_CTX.defs,
    Cw: lambda t: (
      -w[t] * y[t] * sp.log(sigma(z[t])) - (1 - y[t]) * sp.log(1 - sigma(z[t]))
    ),
  },
  "σ(z) = 1/(1 + e^{-z}), C^w = -w y log σ - (1 - y) log(1 - σ)",
)


def _weighted_numeric(what, wrt):
  return Numeric(
    what,
    BCE,
    (i,),
    ((z, LOGITS), (y, UNIT), (w, POSITIVE), (g, COTANGENT)),
    _bce_kw(wrt),
    "jax.vjp",
  )


def pos_weight_derivation() -> Derivation:
  s_i = sigma(z[i])
  dz = Terms(Dot(1 - y[i], s_i), -Dot(w[i], y[i], 1 - s_i))
  dy = Terms(-Dot(w[i], sp.log(s_i)), sp.log(1 - s_i))
  dw = -Dot(y[i], sp.log(s_i))
  steps = (
    Step(
      "torch's `pos_weight` $w_i$ scales the positive term of the binary "
      "cross-entropy (the number of negatives over the number of positives "
      "balances a rare label).",
      eq(
        Cw[i],
        Terms(-Dot(w[i], y[i], sp.log(s_i)), -Dot(1 - y[i], sp.log(1 - s_i))),
      ),
      role="definition",
    ),
    Step(
      "The chain rule through $\\sigma' = \\sigma(1 - \\sigma)$, as for the "
      "plain loss; written with $1 - \\sigma = \\sigma(-z)$, as the code "
      "forms it, there is no cancellation.",
      eq(D(Cw[i], z[i]), dz),
      (General(),),
      name="grad_z",
      role="result",
    ),
    Step(
      "At $w_i = 1$ it is the plain loss's $\\sigma - y$.",
      eq(dz.xreplace({w[i]: 1}), s_i - y[i]),
      (General(),),
    ),
    Step(
      "With respect to the target and to the weight.",
      eq(D(Cw[i], y[i]), dy),
      (General(),),
      name="grad_y",
      role="result",
    ),
    Step(
      "",
      eq(D(Cw[i], w[i]), dw),
      (General(),),
      name="grad_w",
      role="result",
    ),
    Step(
      "The VJPs; the cotangent $g_i$ is elementwise.",
      Chain(label(r"\bar{z}_{i}"), g[i] * D(Cw[i], z[i]), Dot(g[i], dz)),
      (General(), vjp_check(_weighted_explicit(z), z, g)),
      name="vjp_z",
      agrees=(_weighted_numeric("VJP wrt logits", 0),),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{y}_{i}"), g[i] * D(Cw[i], y[i]), Dot(g[i], dy)),
      (General(), vjp_check(_weighted_explicit(y), y, g)),
      name="vjp_y",
      agrees=(_weighted_numeric("VJP wrt labels", 1),),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{w}_{i}"), g[i] * D(Cw[i], w[i]), Dot(g[i], dw)),
      (General(), vjp_check(_weighted_explicit(w), w, g)),
      name="vjp_w",
      agrees=(_weighted_numeric("VJP wrt pos_weight", 2),),
      role="vjp",
    ),
  )
  return Derivation(
    key="sigmoid_bce_pos_weight",
    title="Sigmoid binary cross-entropy with pos_weight",
    functions=(BCE,),
    intro=(
      "`sigmoid_binary_cross_entropy(..., pos_weight=w)` weighs the positive "
      "term by $w$, as torch's `binary_cross_entropy_with_logits`. torch "
      "refuses to differentiate `pos_weight`; jaxsmx gives its gradient too."
    ),
    ctx=WEIGHTED_CTX,
    steps=steps,
    headline=eq(D(Cw[i], z[i]), dz),
  )


# ---------------------------------------------------------------------------
# sigmoid_focal_loss


def _a_t(t):
  return alpha * y[t] + (1 - alpha) * (1 - y[t])


FOCAL_CTX = Context(
  {
    **BCE_CTX.defs,
    u: lambda t: (1 - y[t]) * sigma(z[t]) + y[t] * (1 - sigma(z[t])),
    at_: _a_t,
    L: lambda t: _a_t(t) * Cj[t] * u[t] ** gamma,
  },
  "σ(z) = 1/(1 + e^{-z}), C = BCE, u = 1 - p_t, α_t = α y + (1 - α)(1 - y)",
)


def _focal_explicit(size):
  out = []
  for zv, yv in zip(vec(z, size), vec(y, size), strict=True):
    s = 1 / (1 + sp.exp(-zv))
    uv = (1 - yv) * s + yv * (1 - s)
    c = -yv * sp.log(s) - (1 - yv) * sp.log(1 - s)
    out.append((alpha * yv + (1 - alpha) * (1 - yv)) * c * uv**gamma)
  return sp.Matrix(out)


def _focal_kw(wrt, nargs=2):
  """jax.vjp of the focal loss with alpha and gamma fixed."""

  def run(fn, *xs):
    f = lambda a, b: fn(a, b, alpha=ALPHA, gamma=GAMMA)
    return by_vjp(wrt, nargs)(f, *xs)

  return run


def _focal_scalar(which):
  """The elementwise derivative in alpha or gamma, by jax.jacrev."""
  import jax

  def run(fn, z_, y_, v):
    if which == "alpha":
      return jax.jacrev(lambda a: fn(z_, y_, alpha=a, gamma=GAMMA))(v)
    return jax.jacrev(lambda c: fn(z_, y_, alpha=ALPHA, gamma=c))(v)

  return run


PARAMS = {alpha: ALPHA, gamma: GAMMA}


def focal_derivation() -> Derivation:
  s_i = sigma(z[i])
  r = Dot(s_i, 1 - s_i) / u[i]
  dz = Dot(
    at_[i],
    u[i] ** gamma,
    Terms(
      Dot(1 - y[i], s_i),
      -Dot(y[i], 1 - s_i),
      Dot(gamma, 1 - 2 * y[i], Cj[i], r),
    ),
  )
  dy = Terms(
    Dot(at_[i], u[i] ** gamma, Terms(-z[i], Dot(gamma, 1 - 2 * s_i, Cj[i] / u[i]))),
    Dot(2 * alpha - 1, Cj[i], u[i] ** gamma),
  )
  x = sp.Symbol("x", positive=True)
  zeta = sp.Symbol("z", real=True)
  half = sp.Rational(1, 2)
  sz = 1 / (1 + sp.exp(-zeta))
  steps = (
    Step(
      "$u_i = 1 - p_t$ is the probability the sigmoid gives the wrong side: "
      "$1 - \\sigma$ for $y_i = 1$, $\\sigma$ for $y_i = 0$, a mixture for "
      "a soft label.",
      eq(u[i], Terms(Dot(1 - y[i], s_i), Dot(y[i], 1 - s_i))),
      role="definition",
    ),
    Step(
      "The focal loss scales the binary cross-entropy $C_i$ by "
      "$\\alpha_t u_i^\\gamma$ (optax's definition, soft labels included).",
      eq(L[i], Dot(at_[i], Cj[i], u[i] ** gamma)),
      role="definition",
    ),
    Step(
      "$u_i$ moves against the target: its derivative is the sigmoid's, "
      "signed by $1 - 2y_i$.",
      eq(D(u[i], z[i]), Dot(1 - 2 * y[i], s_i, 1 - s_i)),
      (General(),),
    ),
    Step(
      "The power rule at general $\\gamma$: the factor $u^{\\gamma - 1} = "
      "u^\\gamma / u$ meets $\\sigma(1 - \\sigma)$, so it is written as "
      "$u^\\gamma$ times $r_i = \\sigma(1 - \\sigma) / u_i$.",
      Chain(
        D(u[i] ** gamma, z[i]),
        Dot(gamma, u[i] ** gamma, D(u[i], z[i]) / u[i]),
        Dot(gamma, u[i] ** gamma, 1 - 2 * y[i], r),
      ),
      (General(),),
      name="power",
    ),
    Step(
      "Alone, $\\gamma u^{\\gamma - 1}$ is unbounded as $u \\to 0$ when "
      "$\\gamma < 1$ (here $\\gamma = 1/2$) ...",
      eq(sp.Limit(half * x ** (half - 1), x, 0, "+"), sp.oo),
      (Limit(),),
    ),
    Step(
      "... but for $y = 1$, $u = 1 - \\sigma$ and the product "
      "$u^{\\gamma - 1}\\sigma(1 - \\sigma) = \\sigma\\, u^\\gamma$ "
      "vanishes as the prediction becomes right ($z \\to \\infty$).",
      eq(sp.Limit((1 - sz) ** (half - 1) * sz * (1 - sz), zeta, sp.oo), 0),
      (Limit(),),
    ),
    Step(
      "The gradient with respect to the logit: the BCE's $\\sigma - y$ "
      "(written without cancellation) plus the focusing term. Each factor "
      "is bounded: $r_i$ is $\\sigma$ for $y = 1$ and $1 - \\sigma$ for "
      "$y = 0$.",
      eq(D(L[i], z[i]), dz),
      (General(),),
      name="grad_z",
      role="result",
    ),
    Step(
      "With respect to the label, by the product rule over $\\alpha_t$, "
      "$C_i$ and $u_i^\\gamma$ ($\\partial C/\\partial y = -z$, "
      "$\\partial u/\\partial y = 1 - 2\\sigma$). For a hard label, "
      "$C_i / u_i$ is softplus over sigmoid, which tends to 1.",
      eq(D(L[i], y[i]), dy),
      (General(),),
      name="grad_y",
      role="result",
    ),
    Step(
      "With respect to the weight and the exponent.",
      eq(D(L[i], alpha), Dot(2 * y[i] - 1, Cj[i], u[i] ** gamma)),
      (General(),),
      name="grad_alpha",
      agrees=(
        Numeric(
          "d/dα elementwise",
          FOCAL,
          (i,),
          ((z, LOGITS), (y, UNIT), (alpha, UNIT)),
          _focal_scalar("alpha"),
          "jax.jacrev",
          params={gamma: GAMMA},
        ),
      ),
      role="result",
    ),
    Step(
      "",
      eq(D(L[i], gamma), Dot(L[i], sp.log(u[i]))),
      (General(),),
      name="grad_gamma",
      agrees=(
        Numeric(
          "d/dγ elementwise",
          FOCAL,
          (i,),
          ((z, LOGITS), (y, UNIT), (gamma, POSITIVE)),
          _focal_scalar("gamma"),
          "jax.jacrev",
          params={alpha: ALPHA},
        ),
      ),
      role="result",
    ),
    Step(
      "The VJPs; the cotangent $g_i$ is elementwise.",
      Chain(label(r"\bar{z}_{i}"), g[i] * D(L[i], z[i]), Dot(g[i], dz)),
      (General(), vjp_check(_focal_explicit, z, g)),
      name="vjp_z",
      agrees=(
        Numeric(
          "VJP wrt logits",
          FOCAL,
          (i,),
          ((z, LOGITS), (y, UNIT), (g, COTANGENT)),
          _focal_kw(0),
          "jax.vjp",
          params=PARAMS,
        ),
      ),
      role="vjp",
    ),
    Step(
      "",
      Chain(label(r"\bar{y}_{i}"), g[i] * D(L[i], y[i]), Dot(g[i], dy)),
      (General(), vjp_check(_focal_explicit, y, g)),
      name="vjp_y",
      agrees=(
        Numeric(
          "VJP wrt labels",
          FOCAL,
          (i,),
          ((z, LOGITS), (y, UNIT), (g, COTANGENT)),
          _focal_kw(1),
          "jax.vjp",
          params=PARAMS,
        ),
      ),
      role="vjp",
    ),
  )
  return Derivation(
    key="sigmoid_focal_loss",
    title="Sigmoid focal loss",
    functions=(FOCAL,),
    intro=(
      "Lin et al.'s focal loss, in optax's form: the binary cross-entropy "
      "$C$ scaled by $\\alpha_t (1 - p_t)^\\gamma$, which shrinks the loss "
      "of examples the model already gets right. optax differentiates it "
      "by autodiff, which gives NaN at infinite logits and drops the label "
      "term of $\\partial u/\\partial y$ at hard labels; the closed form "
      "below has neither problem."
    ),
    ctx=FOCAL_CTX,
    steps=steps,
    headline=eq(D(u[i] ** gamma, z[i]), Dot(gamma, u[i] ** gamma, 1 - 2 * y[i], r)),
  )


def derivations() -> tuple[Derivation, ...]:
  return (pos_weight_derivation(), focal_derivation())


# ---------------------------------------------------------------------------
# Options, edges and dtypes.


def _term(d, step, inputs, **params) -> Term:
  d.step(step)
  values = tuple((PARAMS_BY_NAME[k], v) for k, v in params.items())
  return Term(d.key, step, inputs, i, values, derivation=d)


PARAMS_BY_NAME = {"alpha": alpha, "gamma": gamma}


def _elementwise_cot(rng):
  c = rng.standard_normal((ROWS, CLASSES))
  c[0, :2] = 0.0  # entries that do not reach the output
  return c


def _pos_weight_cases(by_key):
  d = by_key["sigmoid_bce_pos_weight"]
  inputs = ((z, "logits"), (y, "labels"), (w, "pos_weight"), (g, "cot"))

  def make(edge=False):
    def build(rng):
      lab = rng.uniform(0, 1, (ROWS, CLASSES))
      pw = rng.uniform(0.2, 3.0, (ROWS, CLASSES))
      x = logits(rng)
      if edge:
        x[1] = np.linspace(-12, 12, CLASSES)  # saturated sigmoids
        lab[2] = np.round(lab[2])  # hard labels
        pw[3, :2] = 0.0  # a zero weight drops the positive term
      args = {"logits": x, "labels": lab, "pos_weight": pw}
      return Problem(args, {}, _elementwise_cot(rng))

    return build

  out = []
  for option, kw in (
    ("pos_weight", {}),
    ("pos_weight, |z| to 12, hard labels, w = 0", {"edge": True}),
  ):
    for wrt, step in (
      ("logits", "vjp_z"),
      ("labels", "vjp_y"),
      ("pos_weight", "vjp_w"),
    ):
      out.append(Case(BCE, option, wrt, make(**kw), _term(d, step, inputs)))
  return out


def _focal_cases(by_key):
  d = by_key["sigmoid_focal_loss"]
  inputs = ((z, "logits"), (y, "labels"), (g, "cot"))

  def make(hard=False, alpha_=None, gamma_=2.0, big=False):
    def build(rng):
      x = logits(rng)
      lab = rng.uniform(0, 1, (ROWS, CLASSES))
      if hard:
        lab = np.round(lab)
      if big:
        x[1] = np.linspace(-12, 12, CLASSES)
      kw = {"gamma": gamma_}
      if alpha_ is not None:
        kw["alpha"] = alpha_
      return Problem({"logits": x, "labels": lab}, kw, _elementwise_cot(rng))

    return build

  out = []
  for option, kw in (
    ("plain (gamma = 2)", {}),
    ("alpha, gamma = 0.5", {"alpha_": 0.25, "gamma_": 0.5}),
    ("gamma = 0 (the BCE)", {"gamma_": 0.0}),
    ("hard labels, |z| to 12, gamma = 0.5", {"hard": True, "big": True, "gamma_": 0.5}),
    ("hard labels, alpha, gamma = 3", {"hard": True, "alpha_": 0.75, "gamma_": 3.0}),
  ):
    a_ = kw.get("alpha_")
    params = {"alpha": 0.5 if a_ is None else a_, "gamma": kw.get("gamma_", 2.0)}
    for wrt, step in (("logits", "vjp_z"), ("labels", "vjp_y")):
      # without alpha, alpha_t = 1; the closed form's alpha_t at alpha = 1/2
      # is 1/2, so the case without alpha compares twice the form
      term = _term(d, step, inputs, **params)
      case = Case(FOCAL, option, wrt, make(**kw), term)
      if a_ is None:
        case = _doubled(case)
      out.append(case)
  return out


def _doubled(case: Case) -> Case:
  """The case without alpha: alpha_t = 1, twice the form at alpha = 1/2."""
  from .agreement.cases import sliced

  term = case.term
  assert term is not None
  return Case(
    case.function,
    case.option,
    case.wrt,
    case.make,
    term,
    expect=lambda prob: 2.0 * sliced(term, prob),
  )


def cases(by_key) -> list[Case]:
  """pos_weight and the focal loss under their options and edges."""
  pw, focal = _pos_weight_cases(by_key), _focal_cases(by_key)
  plain_pw = [c for c in pw if c.option == "pos_weight"]
  plain_focal = [c for c in focal if c.option == "alpha, gamma = 0.5"]
  return (
    pw
    + focal
    + with_dtypes(plain_pw, ("pos_weight",), mixed=True)
    + with_dtypes(plain_focal, ("alpha, gamma = 0.5",))
  )
