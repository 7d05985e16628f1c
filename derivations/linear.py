r"""The fused linear cross-entropy: soft cap, z-loss, the matmul, and reductions.

``linear_softmax_cross_entropy`` never materialises the logits
:math:`u = x W + b`; its gradient is the integer-label closed form of
:mod:`.losses` through the soft cap and the z-loss, chunk by chunk, and, for
``reduction="sum"`` or ``"mean"``, one more step through the weighted mean.
"""

from __future__ import annotations

import dataclasses
import functools

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
  sliced_value,
  term,
  with_dtypes,
)
from .agreement.numeric import LOGITS, Numeric
from .class_weights import linear_gradients, linear_reference
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
      "\\omega_k$, so its $\\bar u$ is the per-example rule scaled by it "
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
# Options, chunks, reductions, kernel paths and dtypes: the cases jaxsmx's
# VJPs must agree on.
#
# Each case is one call of the fused loss on x [N, H] @ w [H, V] + bias. The
# expected gradients are the closed forms above, on the logits u = x w + b:
# per row, dL/du (grad_u) and L (value) on the classes the mask keeps, then
# the reduction's step (linear_reduced) and the matmul's (x̄ = ū Wᵀ,
# W̄ = xᵀ ū, b̄ = Σ ū).


@dataclasses.dataclass(frozen=True)
class Setup:
  """The shape and options of one fused-loss problem."""

  rows: int = ROWS
  vocab: int = 7
  hidden: int = 3
  chunk: int | None = None
  bias: bool = True
  where: bool = False
  ignore: bool = False
  smooth: float = 0.0
  zl: float = 0.0
  softcap: float | None = None
  reduction: str = "none"
  weights: bool = False
  labels: tuple[str, tuple[int, ...]] | None = None  # (dtype, values)
  cancel: bool = False  # w with a common part per row: x̄ = ū Wᵀ cancels
  x_scale: float = 0.5  # x's entries times this (small for a wide x)
  class_weights: bool = False  # one weight per class (torch's weight=)


def _build(setup: Setup):
  def build(rng):
    n, v = setup.rows, setup.vocab
    x = logits(rng, (n, setup.hidden)) * setup.x_scale
    w = logits(rng, (setup.hidden, v)) / 2
    if setup.cancel:  # rows of d sum to ~0, so a common part of w cancels in x̄
      w = w / 8 + 2.0 * rng.choice((-1.0, 1.0), (setup.hidden, 1))
    args = {"x": x, "w": w}
    if setup.labels is None:
      lab = rng.integers(0, v, n)
    else:
      lab = np.resize(np.array(setup.labels[1]), n)
    kw = {
      "label_smoothing": setup.smooth,
      "z_loss": setup.zl,
      "softcap": setup.softcap,
      "chunk_size": setup.chunk,
      "reduction": setup.reduction,
    }
    keep, zero = None, np.zeros(n, bool)
    if setup.bias:
      args["bias"] = logits(rng, (v,)) / 2
    if setup.where:
      m = rng.uniform(size=v) < 0.7
      m[0], m[1] = True, False
      m[-1] = False  # the last column of the last (short) chunk
      lab = np.where(m[lab], lab, 0)
      lab[1] = 1  # a masked target: the row is dropped
      zero[1] = True
      kw["where"] = m
      keep = np.broadcast_to(m, (n, v))
    if setup.ignore:
      kw["ignore_index"] = -1
      lab[2] = -1
      zero[2] = True
    if setup.weights:
      args["weights"] = rng.uniform(0.5, 2.0, n)
    if setup.class_weights:
      args["class_weights"] = rng.uniform(0.2, 3.0, v)
    dtype = np.int32 if setup.labels is None else setup.labels[0]
    kw["labels"] = lab.astype(dtype)
    if setup.reduction == "none":
      cot = cotangent(rng, n)
    else:
      cot = np.asarray(rng.standard_normal())
    ell = np.where(lab < 0, 0, lab)
    return Problem(args, kw, cot, keep=keep, zero=zero, ell=ell)

  return build


def _reference(by_key, setup: Setup, prob: Problem) -> dict[str, np.ndarray]:
  """The expected value and gradients of one problem, from the closed forms."""
  params = dict(alpha=setup.smooth, lam=setup.zl, cap=setup.softcap or NO_CAP)
  d = by_key[LINEAR]
  grad_u = term(d, "grad_u", (u, "u"), **params)
  value = term(d, "value", (u, "u"), index=None, **params)
  x, w = prob.args["x"], prob.args["w"]
  n = x.shape[0]
  b = prob.args.get("bias", np.zeros(w.shape[1]))
  per_row = Problem(
    {"u": x @ w + b}, {}, np.ones(n), keep=prob.keep, zero=prob.zero, ell=prob.ell
  )
  dl_du, losses = sliced(grad_u, per_row), sliced_value(value, per_row)
  omega = prob.args.get("weights", np.ones(n))
  counted = ~np.asarray(prob.zero)
  if setup.reduction == "none":
    cot = prob.cot
    r, out, d_omega = cot * omega, omega * losses, cot * losses
  else:
    cot = float(prob.cot)
    total = 1.0 if setup.reduction == "sum" else omega[counted].sum() or 1.0
    mean = float(np.sum(omega * losses)) / total
    r = cot * omega / total
    out = np.asarray(mean if setup.reduction == "mean" else total * mean)
    # the quotient rule: d/dω_n of Σ ω L / Σ ω = (L_n - [n counts] M) / D
    subtract = mean if setup.reduction == "mean" else 0.0
    d_omega = cot * (losses - counted * subtract) / total
  return linear_gradients(out, r[:, None] * dl_du, x, w, d_omega)


UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}


def bound_16(setup: Setup, dtype: str, wrt: str, reference):
  r"""The error a right 16-bit backward pass can make, entry by entry.

  With :math:`u` the 16-bit unit roundoff and :math:`\epsilon` float32's, the
  kernel either multiplies the float32 :math:`d` of each chunk in float32 (a
  small x, widened) or splits it into 16-bit parts
  :math:`d = h + l + O(u^2 |d|)`, multiplies each exactly in float32, sums
  :math:`K` products (:math:`K` = V for x̄, N for W̄ and b̄) and rounds the
  result to 16 bits:

  .. math:: |\text{got} - \text{want}| \le r\,u\,|\text{want}|
     + \big(u^2 + (K + 4H + 16)\,\epsilon\big) \sum_k |a_k|\,|d_k|

  with :math:`r` roundings of the result (1; 2 for a reduced loss, whose
  gradient is formed in the forward pass and scaled by :math:`g` after), and
  where the sum is that of the product's terms in absolute value (``|d| |W|ᵀ``
  for x̄, ``|x|ᵀ |d|`` for W̄, ``Σ |d|`` for b̄) and :math:`4H + 16`
  covers the float32 logits and softmax that form :math:`d`. Without the
  low part :math:`l` the error is :math:`O(u)` times that sum, which the
  cancelling problems (``Setup.cancel``) make far larger than :math:`u`
  times the result.
  """
  u16, e32 = UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF["float32"]
  k = {"x": setup.vocab, "w": setup.rows, "bias": setup.rows}[wrt]
  gamma = u16**2 + (k + 4 * setup.hidden + 16) * e32

  # the reduced loss forms its gradient in the forward pass, rounded, and
  # scales it by g in the backward pass, rounded again
  roundings = 1 if setup.reduction == "none" else 2

  def tol(prob, want):
    ref = reference(prob)
    a_ubar = np.abs(ref["ubar"])
    x, w = np.abs(prob.args["x"]), np.abs(prob.args["w"])
    size = {"x": a_ubar @ w.T, "w": x.T @ a_ubar, "bias": a_ubar.sum(0)}[wrt]
    return roundings * u16 * np.abs(want) + gamma * size + np.finfo(np.float64).tiny

  return tol


def _cases_of(by_key, option: str, setup: Setup, wrts=None, **extra) -> list[Case]:
  fn = "linear_softmax_cross_entropy"
  if wrts is None:
    wrts = ("x", "w") + (("bias",) if setup.bias else ())
    if setup.weights and setup.reduction != "none":
      wrts += ("weights",)
    if setup.class_weights:
      wrts += ("class_weights",)
  of = linear_reference if setup.class_weights else _reference
  reference = functools.partial(of, by_key, setup)
  out = []
  for wrt in wrts:
    expect = functools.partial(_pick, reference, wrt)
    value = functools.partial(_pick, reference, "value")
    out.append(
      Case(fn, option, wrt, _build(setup), None, expect=expect, value=value, **extra)
    )
  return out


def _pick(reference, key, prob):
  return reference(prob)[key]


def _option_cases(by_key) -> list[Case]:
  rows = (
    ("one chunk", Setup(vocab=6)),
    ("chunks of 2, V = 7", Setup(chunk=2)),
    ("chunks of 3, V = 9", Setup(vocab=9, chunk=3)),
    ("no bias, chunks of 4", Setup(bias=False, chunk=4)),
    ("where, chunks of 3", Setup(where=True, chunk=3)),
    ("ignore_index, chunks of 2", Setup(ignore=True, chunk=2)),
    ("label_smoothing, chunks of 3", Setup(smooth=0.1, chunk=3)),
    (
      "all options, chunks of 2",
      Setup(chunk=2, where=True, ignore=True, smooth=0.1, zl=0.05, softcap=2.0),
    ),
    ("weights, chunks of 3", Setup(chunk=3, weights=True)),
    (
      "uint8 labels up to 255, V = 300",
      Setup(vocab=300, labels=(np.uint8, (255, 44, 130, 7))),
    ),
    (
      "int8 labels up to 127, V = 300",
      Setup(vocab=300, chunk=128, labels=(np.int8, (127, 44, 100, 0))),
    ),
  )
  # the cases that must take a path of their own (docs/internals.md)
  paths = {"chunks of 2, V = 7": "chunk_tail", "chunks of 3, V = 9": "chunk_loop"}
  out = []
  for option, setup in rows:
    out += _cases_of(by_key, option, setup, path=paths.get(option, ""))
  return out


def _reduction_cases(by_key) -> list[Case]:
  """z-loss, soft cap, weights and masks under every reduction."""
  out = []
  for reduction in ("none", "sum", "mean"):
    for option, setup in (
      ("z_loss", Setup(zl=0.05, chunk=3)),
      ("softcap", Setup(softcap=2.0, chunk=3)),
      (
        "z_loss, softcap, where, ignore_index, weights",
        Setup(zl=0.05, softcap=2.0, where=True, ignore=True, weights=True, chunk=3),
      ),
    ):
      setup = dataclasses.replace(setup, reduction=reduction)
      path = "per_example" if reduction == "none" else "reduced_one_pass"
      out += _cases_of(by_key, f"{option}, reduction {reduction}", setup, path=path)
  # several row blocks of the one-pass reduced kernel and a tail
  for rows, what in (
    (300, "a block of 256 and a tail of 44"),
    (600, "two blocks of 256 and a tail of 88"),
  ):
    for reduction in ("sum", "mean"):
      setup = Setup(
        rows=rows,
        vocab=5,
        reduction=reduction,
        zl=0.05,
        softcap=2.0,
        smooth=0.1,
        where=True,
        ignore=True,
        weights=True,
      )
      path = "row_block_loop" if rows // 256 > 1 else "row_block_tail"
      option = f"N = {rows}: {what}, reduction {reduction}"
      out += _cases_of(by_key, option, setup, path=path)
  return out


def _sixteen_bit_cases(by_key) -> list[Case]:
  """16-bit x, w and bias: the widened and the split backward pass, tolerance
  from a formula."""
  out = []
  for reduction in ("none", "mean"):
    setup = Setup(rows=8, vocab=11, hidden=4, chunk=4, cancel=True, reduction=reduction)
    option = f"16-bit backward, w with a common part, reduction {reduction}"
    reference = functools.partial(_reference, by_key, setup)
    path = "backward_16bit_widened" if reduction == "none" else "reduced_one_pass"
    for dtype in ("bfloat16", "float16"):
      for wrt in ("x", "w", "bias"):
        tol = bound_16(setup, dtype, wrt, reference)
        (case,) = _cases_of(by_key, option, setup, (wrt,), path=path)
        out.append(dataclasses.replace(case, dtype=dtype, tolerance=tol))
  # a wide x: the 16-bit dx is summed in place over blocks of 32 rows
  setup = Setup(rows=72, vocab=11, hidden=65536, chunk=4, x_scale=1 / 256)
  option = "16-bit backward, H = 65536: dx in two blocks of 32 rows and a tail"
  reference = functools.partial(_reference, by_key, setup)
  (case,) = _cases_of(by_key, option, setup, ("x",), path="dx_rows_loop")
  tol = bound_16(setup, "bfloat16", "x", reference)
  out.append(dataclasses.replace(case, dtype="bfloat16", tolerance=tol))
  # a long x (16.1 MiB in float32) is not widened: d is split, and w's common
  # part makes dropping the low part fail
  setup = Setup(rows=66000, vocab=11, hidden=64, chunk=4, cancel=True)
  option = "16-bit backward, N = 66000: x too long to widen, d split in two"
  reference = functools.partial(_reference, by_key, setup)
  (case,) = _cases_of(by_key, option, setup, ("x",), path="backward_16bit")
  tol = bound_16(setup, "bfloat16", "x", reference)
  out.append(dataclasses.replace(case, dtype="bfloat16", tolerance=tol))
  return out


def _class_weight_cases(by_key) -> list[Case]:
  """Class weights (torch's weight=) with smoothing, masks, ignored labels,
  per-example weights, the z-loss and soft cap, under every reduction and
  on every kernel path."""
  every = dict(where=True, ignore=True, smooth=0.2, weights=True, class_weights=True)
  out = []
  for reduction in ("none", "sum", "mean"):
    for option, setup in (
      ("class_weights", Setup(chunk=3, class_weights=True)),
      ("class_weights, smoothing, where, ignore_index", Setup(chunk=3, **every)),
      ("class_weights, all options", Setup(chunk=2, zl=0.05, softcap=2.0, **every)),
    ):
      setup = dataclasses.replace(setup, reduction=reduction)
      path = "per_example" if reduction == "none" else "reduced_one_pass"
      out += _cases_of(by_key, f"{option}, reduction {reduction}", setup, path=path)
  # the one-pass kernel's row blocks, and the chunked reduced kernel (16-bit
  # x and w; the class weights' gradient there is the per-example kernel's)
  blocks = Setup(rows=300, vocab=5, reduction="mean", **every)
  option = "class_weights, N = 300, mean"
  out += _cases_of(by_key, option, blocks, path="row_block_tail")
  # (x or w in float32 beside the other in bfloat16 takes the chunked kernel;
  # both in bfloat16, with a float32 bias, a small x widened, the one-pass)
  sixteen = Setup(rows=8, vocab=11, chunk=4, reduction="mean", **every)
  option = "class_weights, bfloat16 beside float32, mean"
  for wrt, path in (("x", "reduced_chunked"), ("w", "reduced_chunked"), ("bias", "")):
    (case,) = _cases_of(by_key, option, sixteen, (wrt,), path=path)
    out.append(dataclasses.replace(case, dtype="float32", other_dtype="bfloat16"))
  return out


def cases(by_key) -> list[Case]:
  """The fused loss under every option, chunking, reduction, path and dtype."""
  base = _option_cases(by_key) + _reduction_cases(by_key) + _class_weight_cases(by_key)
  return (
    base
    + with_dtypes(base, ("one chunk", "chunks of 2, V = 7"))
    + _sixteen_bit_cases(by_key)
  )
