r"""The fused linear cross-entropy: soft cap, z-loss, the matmul, and reductions.

``linear_softmax_cross_entropy`` never materialises the logits
:math:`u = x W + b`; its gradient is the integer-label closed form of
:mod:`.losses` through the soft cap and the z-loss, chunk by chunk, and, for
``reduction="sum"`` or ``"mean"``, one more step through the weighted mean.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .agreement.cases import (
  NO_CAP,
  ROWS,
  Case,
  Problem,
  cotangent,
  logits,
  sliced,
  term,
  with_dtypes,
)
from .agreement.numeric import LOGITS, Numeric
from .engine import (
  Chain,
  Concrete,
  Context,
  D,
  Derivation,
  Dot,
  Explicit,
  General,
  Limit,
  Prod,
  Step,
  Terms,
  Transpose,
  a,
  ell,
  eq,
  gradient_ref,
  i,
  j,
  k,
  label,
  n,
  named,
  summation,
  u,
  vec,
  vjp_check,
  z,
)
from .losses import LSE, SMOOTH_CTX, C, alpha, cap, delta, gs, lam

LINEAR = "linear_softmax_cross_entropy"

# The numeric check: x [2, 3], w [3, n], bias [n], label 0 for both rows.
_ROWS, _HIDDEN = 2, 3
_LINEAR_PARAMS = {alpha: 0.1, lam: 0.05, cap: 2.0}
_LINEAR_KW = dict(label_smoothing=0.1, z_loss=0.05, softcap=2.0)


def _linear_autodiff(fn, x, w, b):
  import jax
  import jax.numpy as jnp

  labels = jnp.zeros((_ROWS,), dtype=jnp.int32)

  def loss(x_, w_, b_):
    return jnp.sum(fn(x_, w_, labels, bias=b_, **_LINEAR_KW))

  gx, gw, gb = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
  return jnp.concatenate([gx.ravel(), gw.ravel(), gb.ravel()])


def _linear_expected(formula, x, w, b):
  import jax.numpy as jnp

  uu = x @ w + b
  ubar = np.stack([np.asarray(formula(jnp.asarray(row))).reshape(-1) for row in uu])
  return np.concatenate(
    [(ubar @ w.T).ravel(), (x.T @ ubar).ravel(), ubar.sum(0).ravel()]
  )


_LINEAR_NUMERIC = Numeric(
  "gradients wrt x, w, bias",
  LINEAR,
  (i,),
  (
    (("x", lambda size: (_ROWS, _HIDDEN)), LOGITS),
    (("w", lambda size: (_HIDDEN, size)), LOGITS),
    (("b", lambda size: (size,)), LOGITS),
  ),
  _linear_autodiff,
  "jax.grad",
  params=_LINEAR_PARAMS,
  extra=lambda size: {ell: 1},
  expected=_linear_expected,
  formula_inputs=(u,),
)


# ---------------------------------------------------------------------------
# Per example: z-loss and soft cap.

L = sp.Symbol("L")
LINEAR_CTX = Context(
  {
    **SMOOTH_CTX.defs,
    z: lambda t: cap * sp.tanh(u[t] / cap),
    L: C + lam * named(LSE, z) ** 2,
  },
  "z = c tanh(u/c), a = softmax(z), L = C + λ lse(z)²",
)


def _linear_label(size):
  return {ell: 1}


def _linear_explicit(size: int) -> sp.Expr:
  us = vec(u, size)
  zs = [cap * sp.tanh(x / cap) for x in us]
  total = sum(sp.exp(x) for x in zs)
  logs = [x - sp.log(total) for x in zs]
  ys = [(1 - alpha) * (1 if r == 0 else 0) + alpha / size for r in range(size)]
  ce = -sum(yv * lv for yv, lv in zip(ys, logs, strict=True))
  return ce + lam * sp.log(total) ** 2


def _matmul_vjp_holds() -> bool:
  # u = x W + b is linear, so the VJP of any loss with dL/du = ubar is the VJP
  # of the linear functional <ubar, u>; check it with Matrix.jacobian.
  d, size = 2, 3
  xs = sp.Matrix([sp.symbols(f"x1:{d + 1}", real=True)])  # 1 x d
  w = sp.Matrix(d, size, lambda r, c: sp.Symbol(f"W{r + 1}{c + 1}", real=True))
  b = sp.Matrix([sp.symbols(f"b1:{size + 1}", real=True)])
  ubar = sp.Matrix([sp.symbols(f"ubar1:{size + 1}", real=True)])
  uu = xs * w + b
  f = (ubar * uu.T)[0, 0]
  ok_x = sp.Matrix([f]).jacobian(list(xs)) == ubar * w.T
  ok_b = sp.Matrix([f]).jacobian(list(b)) == ubar
  dw = sp.Matrix(d, size, lambda r, c: sp.diff(f, w[r, c]))
  ok_w = sp.expand(dw - xs.T * ubar) == sp.zeros(d, size)
  return ok_x and ok_b and ok_w


def linear_cross_entropy_derivation() -> Derivation:
  lse_z = named(LSE, z)
  sech2 = 1 - sp.tanh(u[i] / cap) ** 2
  dz = Terms(
    Dot(a[i], Terms(1, 2 * lam * lse_z)), -Dot(1 - alpha, delta(i, ell)), -alpha / n
  )
  ubar, W, x = (sp.Symbol(s) for s in (r"\bar{u}", "W", "x"))
  steps = (
    Step(
      "The logits are $u = x W + b$, capped softly at $\\pm c$ (Gemma 2).",
      eq(z[i], cap * sp.tanh(u[i] / cap)),
      role="definition",
    ),
    Step(
      "The loss adds the z-loss $\\lambda\\,\\operatorname{lse}(z)^2$ "
      "(PaLM) to the smoothed integer-label cross-entropy.",
      eq(L, Terms(C, lam * lse_z**2)),
      role="definition",
      name="value",
    ),
    Step(
      "The soft cap's chain rule: $\\tanh' = 1 - \\tanh^2$.",
      eq(D(z[i], u[i]), sech2),
      (General(),),
    ),
    Step(
      "It is elementwise, so its Jacobian is diagonal.",
      eq(D(z[j], u[i]), Dot(delta(i, j), 1 - sp.tanh(u[j] / cap) ** 2)),
      (General(),),
    ),
    Step(
      "As $c \\to \\infty$ the cap is the identity.",
      eq(sp.Limit(cap * sp.tanh(u[i] / cap), cap, sp.oo), u[i]),
      (Limit(),),
    ),
    Step(
      "The z-loss gradient: the gradient of logsumexp is softmax.",
      Chain(
        D(lam * lse_z**2, z[i]),
        Dot(2 * lam, lse_z, D(lse_z, z[i])),
        2 * lam * lse_z * a[i],
      ),
      (General(),),
      name="zloss",
      role="result",
    ),
    Step(
      "The gradient with respect to the capped logits: the label-smoothing "
      "gradient plus the z-loss term.",
      eq(D(L, z[i]), dz),
      (General(),),
      name="grad_z",
      role="result",
    ),
    Step(
      "Through the cap, by the chain rule; only $j = i$ survives.",
      Chain(
        D(L, u[i]),
        summation(Dot(D(L, z[j]), D(z[j], u[i])), j),
        Prod(dz, sech2),
      ),
      (
        General(),
        Concrete(
          gradient_ref(_linear_explicit, u),
          (i,),
          sizes=tuple(range(1, 5)),
          extra=_linear_label,
          what="Matrix.jacobian (ℓ = 1)",
        ),
      ),
      name="grad_u",
      agrees=(_LINEAR_NUMERIC,),
      role="result",
    ),
    Step(
      "Through the matmul: with $\\bar u = g\\,\\partial L/\\partial u$ "
      "per example, $\\bar x = \\bar u W^{\\mathsf T}$, "
      "$\\bar W = x^{\\mathsf T} \\bar u$ and $\\bar b = \\bar u$ (summed "
      "over examples).",
      sp.Tuple(
        eq(label(r"\bar{x}"), Dot(ubar, Transpose(W))),
        eq(label(r"\bar{W}"), Dot(Transpose(x), ubar)),
        eq(label(r"\bar{b}"), ubar),
      ),
      (Explicit(_matmul_vjp_holds, "d = 2, n = 3 vs Matrix.jacobian"),),
    ),
    Step(
      "The VJP with respect to the uncapped logits.",
      Chain(label(r"\bar{u}_{i}"), gs * D(L, u[i]), Dot(gs, Prod(dz, sech2))),
      (
        General(),
        vjp_check(
          _linear_explicit, u, gs, sizes=tuple(range(1, 5)), extra=_linear_label
        ),
      ),
      name="vjp_u",
      role="vjp",
    ),
  )
  return Derivation(
    key="linear_softmax_cross_entropy",
    title="Fused linear cross-entropy: z-loss and soft cap",
    functions=("linear_softmax_cross_entropy",),
    intro=(
      "The fused loss never materialises the logits, but its gradient "
      "is the same closed form, chunk by chunk."
    ),
    ctx=LINEAR_CTX,
    steps=steps,
    headline=eq(D(L, u[i]), Prod(dz, sech2)),
  )


# ---------------------------------------------------------------------------
# The reduced fused loss: reduction="sum" / "mean" with weights.

Lx = sp.IndexedBase("L", real=True)  # the per-example losses
om = sp.IndexedBase(r"\omega", positive=True)  # the per-example weights
Lbar = sp.Symbol(r"\bar{L}")
REDUCED_CTX = Context(
  {Lbar: summation(om[k] * Lx[k]) / summation(om[k])},
  "L̄ = Σ ω L / Σ ω over the n examples that count",
)


def _mean_explicit(size: int) -> sp.Expr:
  ws, ls_ = vec(om, size), vec(Lx, size)
  return sum(w * v for w, v in zip(ws, ls_, strict=True)) / sum(ws)


def reduced_linear_derivation() -> Derivation:
  total = summation(om[k])
  steps = (
    Step(
      'With `reduction="mean"` the fused loss returns the weighted mean of '
      "the per-example losses $L_k$ over the $n$ examples that count "
      '(ignored and dropped rows have weight 0); `"sum"` drops the '
      "denominator. Here $n$ counts examples, not classes.",
      eq(Lbar, summation(om[k] * Lx[k]) / total),
      role="definition",
      name="definition",
    ),
    Step(
      r"Each example's losses get the cotangent $g\,\omega_i / \sum_k "
      "\\omega_k$, so its $\bar u$ is the per-example rule scaled by it "
      r"(for the sum: $g\,\omega_i$).",
      eq(D(Lbar, Lx[i]), om[i] / total),
      (General(),),
      name="grad_l",
      role="result",
    ),
    Step(
      "The weights are differentiable too: each moves the mean towards its "
      "example's loss.",
      eq(D(Lbar, om[i]), (Lx[i] - Lbar) / total),
      (General(),),
      name="grad_w",
      role="result",
    ),
    Step(
      "The VJPs of the reduction.",
      Chain(label(r"\bar{L}_{i}"), gs * D(Lbar, Lx[i]), gs * om[i] / total),
      (General(), vjp_check(_mean_explicit, Lx, gs)),
      name="vjp_l",
      role="vjp",
    ),
    Step(
      "",
      Chain(
        label(r"\bar{\omega}_{i}"), gs * D(Lbar, om[i]), gs * (Lx[i] - Lbar) / total
      ),
      (General(), vjp_check(_mean_explicit, om, gs)),
      name="vjp_w",
      role="vjp",
    ),
  )
  return Derivation(
    key="linear_reduced",
    title="Fused linear cross-entropy: sum and mean with weights",
    functions=("linear_softmax_cross_entropy",),
    intro=(
      "The reduced mode, derived as one step on top of the per-example rule; "
      "the option table compares it with jaxsmx (`reduction` rows)."
    ),
    ctx=REDUCED_CTX,
    steps=steps,
    headline=eq(D(Lbar, Lx[i]), om[i] / total),
  )


def derivations() -> tuple[Derivation, ...]:
  return (linear_cross_entropy_derivation(), reduced_linear_derivation())


# ---------------------------------------------------------------------------
# Options, chunks and dtypes: the cases jaxsmx's VJPs must agree on.


HIDDEN = 3


def _linear_cases(by_key):
  fn = "linear_softmax_cross_entropy"

  def make(
    vocab=7,
    chunk=None,
    bias=True,
    where=False,
    ignore=False,
    smooth=0.0,
    zl=0.0,
    softcap=None,
    reduction="none",
    weights=False,
  ):
    def build(rng):
      x = logits(rng, (ROWS, HIDDEN)) / 2
      w = logits(rng, (HIDDEN, vocab)) / 2
      args = {"x": x, "w": w}
      lab = rng.integers(0, vocab, ROWS)
      kw = {
        "label_smoothing": smooth,
        "z_loss": zl,
        "softcap": softcap,
        "chunk_size": chunk,
        "reduction": reduction,
      }
      keep, zero = None, np.zeros(ROWS, bool)
      if bias:
        args["bias"] = logits(rng, (vocab,)) / 2
      if where:
        m = rng.uniform(size=vocab) < 0.7
        m[0], m[1] = True, False
        m[-1] = False  # the last column of the last (short) chunk
        lab = np.where(m[lab], lab, 0)
        lab[1] = 1  # a masked target: the row is dropped
        zero[1] = True
        kw["where"] = m
        keep = np.broadcast_to(m, (ROWS, vocab))
      if ignore:
        kw["ignore_index"] = -1
        lab[2] = -1
        zero[2] = True
      if weights:
        kw["weights"] = rng.uniform(0.5, 2.0, ROWS)
      kw["labels"] = lab.astype(np.int32)
      cot = cotangent(rng) if reduction == "none" else np.asarray(rng.standard_normal())
      prob = Problem(args, kw, cot, keep=keep, zero=zero, ell=np.where(lab < 0, 0, lab))
      return prob

    return build

  def expect(wrt, smooth, zl, softcap):
    grad_u = term(
      by_key[LINEAR], "grad_u", (u, "u"), alpha=smooth, lam=zl, cap=softcap or NO_CAP
    )

    def run(prob):
      x, w = prob.args["x"], prob.args["w"]
      b = prob.args.get("bias", np.zeros(w.shape[1]))
      u = x @ w + b
      g_ = prob.cot if prob.cot.ndim else np.full(ROWS, float(prob.cot))
      wt = prob.kwargs.get("weights")
      g_ = g_ * (1.0 if wt is None else wt)
      if prob.kwargs["reduction"] == "mean":
        counted = ~prob.zero
        total = (np.ones(ROWS) if wt is None else wt)[counted].sum()
        g_ = g_ / total
      sub = Problem({"u": u}, {}, g_, keep=prob.keep, zero=prob.zero, ell=prob.ell)
      ubar = sliced(grad_u, sub) * g_[:, None]
      ubar[g_ == 0] = 0.0
      return {"x": ubar @ w.T, "w": x.T @ ubar, "bias": ubar.sum(0)}[wrt]

    return run

  out = []
  rows = (
    ("one chunk", {"vocab": 6}),
    ("chunks of 2, V = 7", {"chunk": 2}),
    ("chunks of 3, V = 9", {"vocab": 9, "chunk": 3}),
    ("no bias, chunks of 4", {"bias": False, "chunk": 4}),
    ("where, chunks of 3", {"where": True, "chunk": 3}),
    ("ignore_index, chunks of 2", {"ignore": True, "chunk": 2}),
    ("label_smoothing, chunks of 3", {"smooth": 0.1, "chunk": 3}),
    ("z_loss, chunks of 3", {"zl": 0.05, "chunk": 3}),
    ("softcap, chunks of 3", {"softcap": 2.0, "chunk": 3}),
    (
      "all options, chunks of 2",
      {
        "chunk": 2,
        "where": True,
        "ignore": True,
        "smooth": 0.1,
        "zl": 0.05,
        "softcap": 2.0,
      },
    ),
    (
      "reduction sum, weights, chunks of 3",
      {"chunk": 3, "reduction": "sum", "weights": True},
    ),
    ("reduction mean, ignore_index", {"chunk": 3, "reduction": "mean", "ignore": True}),
  )
  for option, kw in rows:
    for wrt in ("x", "w", "bias"):
      if wrt == "bias" and kw.get("bias") is False:
        continue
      e = expect(wrt, kw.get("smooth", 0.0), kw.get("zl", 0.0), kw.get("softcap"))
      out.append(Case(fn, option, wrt, make(**kw), None, expect=e))
  return out


def cases(by_key) -> list[Case]:
  """The fused loss under every option, chunking and reduction."""
  base = _linear_cases(by_key)
  return base + with_dtypes(base, ("one chunk", "chunks of 2, V = 7"))
