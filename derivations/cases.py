r"""Every option, edge and dtype: jaxsmx's VJPs against the closed forms.

:mod:`derivations.numeric` compares each closed form in its plain case. This
module runs each jaxsmx function with every option that changes its
gradient (``where`` per class and per example, label smoothing,
``ignore_index``, ``b``, z-loss, soft cap, bias, several vocabulary chunks),
at the edges (empty slices, :math:`-\infty` logits, zero probabilities,
ignored rows, zero cotangents) and in float32 and 16-bit, always through
``jax.vjp`` with random cotangents.

The expected gradient is the derivation's closed form (a step's formula,
lambdified once for general :math:`n`) evaluated on the slice the options
define: masking means slicing, so row :math:`r` keeps its classes
:math:`\{k : m_{rk} = 1\}`, the closed form is evaluated at
:math:`n = \sum_k m_{rk}` on the kept entries and the masked entries get 0.
A :math:`-\infty` logit is evaluated as it stands, which is the limit (its
probability is 0). An empty slice, an ignored row or a zero cotangent gives 0.

The cases are data: :func:`cases` lists them, grouped by function; the
report shows one table per function.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from . import _core
from .numeric import _COMPILER_OPTIONS, _FILL, lambdify_general

ROWS, CLASSES = 4, 6
EPS = {"float64": 1e-10, "float32": 64 * 2.0**-23, "bfloat16": 4 * 2.0**-7}

gs = sp.Symbol("g", real=True)
alpha = sp.Symbol(r"\alpha", nonnegative=True)
lam = sp.Symbol(r"\lambda", nonnegative=True)
cap = sp.Symbol("c", positive=True)
NO_CAP = 1e8  # softcap=None is the limit c -> oo; c tanh(u/c) - u < 1e-15 here


@dataclasses.dataclass(frozen=True)
class Term:
  """A closed form: ``key``/``step`` of a derivation, free index ``index``.

  ``inputs`` maps each base or symbol of the formula to the problem array it
  reads (``"cot"`` is the cotangent).
  """

  key: str
  step: str
  inputs: tuple[tuple[Any, str], ...]
  index: sp.Symbol = _core.i
  params: tuple[tuple[sp.Symbol, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
  """One call of a jaxsmx function and the gradient it must give.

  Attributes:
    function: the jaxsmx name.
    option: the options, for the report's table.
    wrt: the argument whose gradient is compared.
    make: ``rng -> Problem``.
    term: the closed form the gradient must equal.
    dtype: the floating dtype of the differentiable inputs.
    other_dtype: the dtype of the other floating input (mixed precision).
  """

  function: str
  option: str
  wrt: str
  make: Callable[[np.random.Generator], Problem]
  term: Term | None
  dtype: str = "float64"
  other_dtype: str | None = None
  expect: Callable[..., np.ndarray] | None = None

  @property
  def name(self) -> str:
    dt = self.dtype + (f"+{self.other_dtype}" if self.other_dtype else "")
    return f"{self.function}/{self.option}/{self.wrt}/{dt}"


@dataclasses.dataclass
class Problem:
  """The arrays of one call.

  Attributes:
    args: positional arguments by name, in order.
    kwargs: keyword arguments (static options and masks).
    cot: the cotangent of the output.
    keep: ``[rows, n]`` the classes each row's slice keeps.
    zero: ``[rows]`` rows whose gradient is 0 (ignored, dropped).
    ell: ``[rows]`` the 0-based label, or None.
    fix: documented edge values, ``(expected, problem) -> expected``.
  """

  args: dict[str, np.ndarray]
  kwargs: dict[str, Any]
  cot: np.ndarray
  keep: np.ndarray | None = None
  zero: np.ndarray | None = None
  ell: np.ndarray | None = None
  fix: Callable[[np.ndarray, Problem], np.ndarray] | None = None


# ---------------------------------------------------------------------------
# Drawing inputs.


def _logits(rng, shape=(ROWS, CLASSES)):
  return 1.5 * rng.standard_normal(shape)


def _probs(rng, shape=(ROWS, CLASSES)):
  v = rng.uniform(0.05, 1.0, shape)
  return v / v.sum(-1, keepdims=True)


def _mask(rng, empty_row=True):
  """A class mask with 2..n-1 classes per row; the last row empty."""
  m = rng.uniform(size=(ROWS, CLASSES)) < 0.6
  m[:, 0] = True
  m[:, 1] = False
  if empty_row:
    m[-1] = False
  return m


def _row_mask():
  return np.array([True, False, True, True])


def _cot(rng, rows=ROWS):
  c = rng.standard_normal(rows)
  c[0] = 0.0  # a row that does not reach the output
  return c


# ---------------------------------------------------------------------------
# Evaluating a closed form on the slices.


@functools.cache
def _derivations():
  from . import all_derivations

  return {d.key: d for d in all_derivations()}


@functools.cache
def _lambdified(term: Term, width: int):
  d = _derivations()[term.key]
  step = d.step(term.step)
  expr = _core.evaluate(step.formula, step.ctx or d.ctx)
  expr = expr.xreplace({s: sp.Float(v, 17) for s, v in term.params})
  bases = [b for b, _ in term.inputs]
  return lambdify_general(expr, (term.index,), bases, ROWS, width, numpy=True)


def _sliced(term: Term, prob: Problem) -> np.ndarray:
  """The closed form on each row's kept classes, 0 elsewhere."""
  first = next(prob.args[s] for b, s in term.inputs if isinstance(b, sp.IndexedBase))
  rows, width = first.shape
  keep = np.ones((rows, width), bool) if prob.keep is None else prob.keep
  keep = np.broadcast_to(keep, (rows, width))
  counts = keep.sum(1)
  order = np.argsort(~keep, axis=1, kind="stable")
  tail = np.arange(width)[None, :] >= counts[:, None]
  arrays = []
  for base, src in term.inputs:
    v = prob.cot if src == "cot" else prob.args.get(src, prob.kwargs.get(src))
    v = np.asarray(v, np.float64)
    if isinstance(base, sp.IndexedBase):
      v = np.take_along_axis(np.broadcast_to(v, (rows, width)), order, 1)
      arrays.append(np.where(tail, _FILL, v))
    else:
      arrays.append(np.broadcast_to(v, (rows,)))
  ell = np.ones(rows, int)
  if prob.ell is not None:
    pos = np.argmax(order == np.asarray(prob.ell)[:, None], axis=1)
    ell = pos + 1
  out = _lambdified(term, width)(np.maximum(counts, 1), ell, *arrays)
  full = np.zeros((rows, width))
  for r in range(rows):
    full[r, order[r, : counts[r]]] = out[r, : counts[r]]
  full[counts == 0] = 0.0
  if prob.zero is not None:
    full[np.asarray(prob.zero)] = 0.0
  if prob.cot.ndim == 1:  # a scalar cotangent of 0 gives a gradient of 0
    full[prob.cot == 0] = 0.0
  if prob.fix is not None:
    full = prob.fix(full, prob)
  return full


def expected(case: Case, prob: Problem) -> np.ndarray:
  if case.expect is not None:
    return case.expect(prob)
  return _sliced(case.term, prob)


# ---------------------------------------------------------------------------
# The cases, by function.


def _t(key, step, *inputs, index=_core.i, **params):
  names = {"alpha": alpha, "lam": lam, "cap": cap}
  return Term(
    key, step, tuple(inputs), index, tuple((names[k], v) for k, v in params.items())
  )


z, y, g = _core.z, _core.y, _core.g
p, q, t, lp = _core.p, _core.q, _core.t, _core.lp


def _softmax_cases(fn, key, index):
  vjp = _t(key, "vjp", (z, "x"), (g, "cot"), index=index)

  def plain(rng):
    return Problem({"x": _logits(rng)}, {}, rng.standard_normal((ROWS, CLASSES)))

  def where(rng):
    m = _mask(rng)
    return Problem(
      {"x": _logits(rng)}, {"where": m}, rng.standard_normal(m.shape), keep=m
    )

  def per_row(rng):
    m = _row_mask()[:, None]
    return Problem(
      {"x": _logits(rng)}, {"where": m}, rng.standard_normal((ROWS, CLASSES)), keep=m
    )

  def neg_inf(rng):
    x = _logits(rng)
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


def _lse_cases():
  vjp = _t("logsumexp", "vjp", (z, "a"), (gs, "cot"))
  vz = _t("logsumexp_b", "vjp_z", (z, "a"), (_softmax_b(), "b"), (gs, "cot"))
  vb = _t("logsumexp_b", "vjp_b", (z, "a"), (_softmax_b(), "b"), (gs, "cot"))

  def plain(rng):
    return Problem({"a": _logits(rng)}, {"axis": -1}, _cot(rng))

  def where(rng):
    m = _mask(rng)
    return Problem({"a": _logits(rng)}, {"axis": -1, "where": m}, _cot(rng), keep=m)

  def with_b(rng):
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    return Problem({"a": _logits(rng), "b": b}, {"axis": -1}, _cot(rng))

  def signed_b(rng):
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    b[1] *= -1.0  # a negative sum: log|S| and sign -1
    b[2, :2] *= -1.0
    return Problem(
      {"a": _logits(rng), "b": b}, {"axis": -1, "return_sign": True}, _cot(rng)
    )

  def b_where(rng):
    m = _mask(rng)
    b = rng.uniform(0.2, 2.0, (ROWS, CLASSES))
    return Problem(
      {"a": _logits(rng), "b": b}, {"axis": -1, "where": m}, _cot(rng), keep=m
    )

  fn = "logsumexp"
  return [
    Case(fn, "plain", "a", plain, vjp),
    Case(fn, "where per class, empty slice", "a", where, vjp),
    Case(fn, "b", "a", with_b, vz),
    Case(fn, "b", "b", with_b, vb),
    Case(fn, "b of both signs, return_sign", "a", signed_b, vz),
    Case(fn, "b of both signs, return_sign", "b", signed_b, vb),
    Case(fn, "b, where per class", "a", b_where, vz),
    Case(fn, "b, where per class", "b", b_where, vb),
  ]


def _softmax_b():
  from .softmax import bb

  return bb


def _soft_ce_cases():
  fn = "softmax_cross_entropy"

  def terms(a_=0.0):
    if a_:
      k = "soft_label_smoothing"
      return (
        _t(k, "vjp_z", (z, "logits"), (y, "labels"), (gs, "cot"), alpha=a_),
        _t(k, "vjp_y", (z, "logits"), (y, "labels"), (gs, "cot"), alpha=a_),
      )
    k = "softmax_cross_entropy"
    return (
      _t(k, "vjp_z", (z, "logits"), (y, "labels"), (gs, "cot")),
      _t(k, "vjp_y", (z, "logits"), (y, "labels"), (gs, "cot")),
    )

  def make(where=None, smooth=0.0, edge=False):
    def build(rng):
      x, lab = _logits(rng), rng.uniform(0.1, 1.0, (ROWS, CLASSES))
      kw, keep = {}, None
      if smooth:
        kw["label_smoothing"] = smooth
      if where == "class":
        keep = _mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = _row_mask()
        keep = _row_mask()[:, None]
      if edge:
        x[:, 3] = -np.inf  # zero probability, zero label: loss term 0
        lab[:, 3] = 0.0
        lab[1] = 0.0  # an all-zero label row
        x[2] = -np.inf  # an empty slice: loss 0, gradient 0
        return Problem(
          {"logits": x, "labels": lab}, kw, _cot(rng), zero=np.arange(ROWS) == 2
        )
      return Problem({"logits": x, "labels": lab}, kw, _cot(rng), keep=keep)

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
    out.append(Case(fn, option, "logits", make(**kw), tz))
    out.append(Case(fn, option, "labels", make(**kw), ty))
  tz, ty = terms()
  for wrt, term in (("logits", tz), ("labels", ty)):
    option = "-inf logit with label 0, zero labels, empty slice"
    out.append(Case(fn, option, wrt, make(edge=True), term))
  return out


def _int_ce_cases():
  fn = "softmax_cross_entropy_with_integer_labels"

  def term(a_):
    return _t("label_smoothing", "vjp_z", (z, "logits"), (gs, "cot"), alpha=a_)

  def make(smooth=0.0, where=None, ignore=False, masked_label=False, edge=False):
    def build(rng):
      x = _logits(rng)
      lab = rng.integers(0, CLASSES, ROWS)
      kw, keep, zero = {}, None, np.zeros(ROWS, bool)
      if smooth:
        kw["label_smoothing"] = smooth
      if where == "class":
        keep = _mask(rng)
        for r in range(ROWS - 1):  # a kept label, the last row empty
          lab[r] = rng.choice(np.flatnonzero(keep[r]))
        if masked_label:
          lab[1] = 1  # class 1 is masked in every row: the row is dropped
          zero[1] = True
        kw["where"] = keep
      elif where == "row":
        kw["where"] = _row_mask()
        keep = _row_mask()[:, None]
      if ignore:
        kw["ignore_index"] = -100
        lab[2] = -100
        zero[2] = True
      if edge:
        x[:, 4] = -np.inf
        lab = np.where(lab == 4, 0, lab)
        x[-1] = -np.inf
        zero[-1] = True
      prob = Problem({"logits": x}, kw, _cot(rng), keep=keep, zero=zero)
      prob.kwargs["labels"] = lab.astype(np.int32)
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
  )
  return [
    Case(fn, o, "logits", make(**kw), term(kw.get("smooth", 0.0))) for o, kw in rows
  ]


def _entropy_family():
  out = []

  def se(where=None, edge=False):
    def build(rng):
      x, kw, keep = _logits(rng), {}, None
      if where == "class":
        keep = _mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = _row_mask()[:, None]
      if edge:
        keep = np.ones(x.shape, bool)
        x[:, 2] = -np.inf
        x[-1] = -np.inf
        keep[:, 2] = False  # probability 0: its class drops out (the limit)
        keep[-1] = False
      return Problem({"logits": x}, kw, _cot(rng), keep=keep)

    return build

  tse = _t("softmax_entropy", "vjp", (z, "logits"), (gs, "cot"))
  fn = "softmax_entropy"
  out += [
    Case(fn, "plain", "logits", se(), tse),
    Case(fn, "where per class, empty slice", "logits", se("class"), tse),
    Case(fn, "where per example", "logits", se("row"), tse),
    Case(fn, "-inf logits, all -inf slice", "logits", se(edge=True), tse),
  ]

  def ent(where=None, edge=False):
    def build(rng):
      pr, kw, keep = _probs(rng), {}, None
      if where == "class":
        keep = _mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = _row_mask()[:, None]
      if edge:
        pr[:, 1] = 0.0  # d/dp of -p log p at 0 is +inf: the one-sided limit
      return Problem({"probs": pr}, kw, _cot(rng), keep=keep)

    return build

  te = _t("entropy", "vjp", (p, "probs"), (gs, "cot"))
  fn = "entropy"
  out += [
    Case(fn, "plain", "probs", ent(), te),
    Case(fn, "where per class, empty slice", "probs", ent("class"), te),
    Case(fn, "where per example", "probs", ent("row"), te),
    Case(fn, "zero probabilities (0 log 0 = 0)", "probs", ent(edge=True), te),
  ]

  def two(names, draw, where=None, edge=None):
    def build(rng):
      a_, b_ = draw(rng)
      kw, keep, fix = {}, None, None
      if where == "class":
        keep = _mask(rng)
        kw["where"] = keep
      elif where == "row":
        kw["where"] = keep = _row_mask()[:, None]
      if edge == "ce":
        a_[:, 2] = 0.0  # p = 0: the term and its q-gradient are 0
        a_[:, 4], b_[:, 4] = 0.0, 0.0  # p = q = 0: 0, not 0/0

        def fix(e, prob):
          return np.where(prob.args["p"] == 0, 0.0, e) if case_wrt[0] == "q" else e

      if edge == "kl":
        b_[:, 2] = 0.0  # t = 0: the term is 0, its t-gradient -inf
      return Problem(
        dict(zip(names, (a_, b_), strict=True)), kw, _cot(rng), keep=keep, fix=fix
      )

    case_wrt = [""]
    return build, case_wrt

  fn = "cross_entropy"
  tp = _t("cross_entropy", "vjp_p", (p, "p"), (q, "q"), (gs, "cot"))
  tq = _t("cross_entropy", "vjp_q", (p, "p"), (q, "q"), (gs, "cot"))
  for option, kw in (
    ("plain", {}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("zero p, zero p and q", {"edge": "ce"}),
  ):
    for wrt, term in (("p", tp), ("q", tq)):
      build, w = two(("p", "q"), lambda r: (_probs(r), _probs(r)), **kw)
      w[0] = wrt
      out.append(Case(fn, option, wrt, build, term))

  fn = "kl_divergence"
  tl = _t(
    "kl_divergence", "vjp_l", (lp, "log_predictions"), (t, "targets"), (gs, "cot")
  )
  tt = _t(
    "kl_divergence", "vjp_t", (lp, "log_predictions"), (t, "targets"), (gs, "cot")
  )
  for option, kw in (
    ("plain", {}),
    ("where per class, empty slice", {"where": "class"}),
    ("where per example", {"where": "row"}),
    ("zero targets", {"edge": "kl"}),
  ):
    for wrt, term in (("log_predictions", tl), ("targets", tt)):
      build, _ = two(
        ("log_predictions", "targets"), lambda r: (np.log(_probs(r)), _probs(r)), **kw
      )
      out.append(Case(fn, option, wrt, build, term))
  return out


def _bce_cases():
  fn = "sigmoid_binary_cross_entropy"
  k = "sigmoid_binary_cross_entropy"

  def build(rng):
    c = rng.standard_normal((ROWS, CLASSES))
    c[0] = 0.0
    return Problem(
      {"logits": _logits(rng), "labels": rng.uniform(0, 1, (ROWS, CLASSES))}, {}, c
    )

  return [
    Case(
      fn,
      "plain",
      "logits",
      build,
      _t(k, "vjp_z", (z, "logits"), (y, "labels"), (g, "cot")),
    ),
    Case(
      fn,
      "plain",
      "labels",
      build,
      _t(k, "vjp_y", (z, "logits"), (y, "labels"), (g, "cot")),
    ),
  ]


# The fused loss: x [ROWS, HIDDEN] @ w [HIDDEN, V] + bias.
HIDDEN = 3
LINEAR_TERM = "linear_softmax_cross_entropy"


def _linear_cases():
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
      x = _logits(rng, (ROWS, HIDDEN)) / 2
      w = _logits(rng, (HIDDEN, vocab)) / 2
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
        args["bias"] = _logits(rng, (vocab,)) / 2
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
      cot = _cot(rng) if reduction == "none" else np.asarray(rng.standard_normal())
      prob = Problem(args, kw, cot, keep=keep, zero=zero, ell=np.where(lab < 0, 0, lab))
      return prob

    return build

  def expect(wrt, smooth, zl, softcap):
    term = _t(
      LINEAR_TERM, "grad_u", (_core.u, "u"), alpha=smooth, lam=zl, cap=softcap or NO_CAP
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
      ubar = _sliced(term, sub) * g_[:, None]
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


def _dtype_cases(base: Sequence[Case]) -> list[Case]:
  """float32 and 16-bit versions of the plain cases (and two mixed ones)."""
  out = []
  for c in base:
    if c.option not in ("plain", "one chunk", "chunks of 2, V = 7"):
      continue
    out.append(dataclasses.replace(c, dtype="float32"))
    if c.function in (
      "softmax_cross_entropy",
      "cross_entropy",
      "kl_divergence",
      "sigmoid_binary_cross_entropy",
    ):
      out.append(dataclasses.replace(c, dtype="bfloat16", other_dtype="float32"))
      out.append(dataclasses.replace(c, dtype="float32", other_dtype="bfloat16"))
    else:
      out.append(dataclasses.replace(c, dtype="bfloat16"))
  return out


def cases() -> tuple[Case, ...]:
  """Every case, grouped by function."""
  base = (
    _softmax_cases("softmax", "softmax", _core.i)
    + _softmax_cases("log_softmax", "log_softmax", _core.j)
    + _lse_cases()
    + _soft_ce_cases()
    + _int_ce_cases()
    + _entropy_family()
    + _bce_cases()
    + _linear_cases()
  )
  return tuple(base) + tuple(_dtype_cases(base))


# ---------------------------------------------------------------------------
# Running.


@dataclasses.dataclass(frozen=True)
class CaseResult:
  case: Case
  error: float  # largest error relative to max(1, |expected|); nan if not run
  dtype_ok: bool
  detail: str = ""

  @property
  def ok(self) -> bool:
    return (
      not self.detail and self.dtype_ok and bool(self.error <= EPS[self.case.dtype])
    )


def _seed(name: str) -> int:
  return zlib.crc32(name.encode())


def _cast(x, dtype):
  import jax.numpy as jnp

  return jnp.asarray(x).astype(dtype)


def _problem(case: Case) -> Problem:
  prob = case.make(np.random.default_rng(_seed(case.function + case.option)))
  # round the floating inputs to their dtypes; the reference sees the rounded values
  import ml_dtypes

  for name in list(prob.args):
    dt = case.dtype if name == case.wrt else (case.other_dtype or case.dtype)
    dt = ml_dtypes.bfloat16 if dt == "bfloat16" else dt
    prob.args[name] = np.asarray(prob.args[name]).astype(dt).astype(np.float64)
  return prob


def _call(fn, case: Case, prob: Problem):
  """``(value, vjp of case.wrt)`` of one case, traced under jit."""
  import jax
  import jax.numpy as jnp

  names = list(prob.args)
  dts = [
    case.dtype if nm == case.wrt else (case.other_dtype or case.dtype) for nm in names
  ]
  kw = {
    k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v)
    for k, v in prob.kwargs.items()
  }

  def run(*arrays):
    arrays = [a_.astype(dt) for a_, dt in zip(arrays, dts, strict=True)]
    pos = names.index(case.wrt)

    def f(v):
      full = list(arrays)
      full[pos] = v
      if case.function == "linear_softmax_cross_entropy":
        return fn(**dict(zip(names, full, strict=True)), **kw)
      out = fn(**dict(zip(names, full, strict=True)), **kw)
      return out[0] if isinstance(out, tuple) else out

    value, pull = jax.vjp(f, arrays[pos])
    (grad,) = pull(jnp.asarray(prob.cot).astype(value.dtype))
    return value, grad

  return run


def run_cases(
  selected: Sequence[Case] | None = None, fns: Mapping[str, Callable] | None = None
) -> list[CaseResult]:
  """Runs the cases (default all) in one compiled program, float64 enabled."""
  import jax
  import jax.numpy as jnp

  selected = tuple(cases() if selected is None else selected)
  fns = dict(fns or {})
  results: dict[str, CaseResult] = {}
  with jax.enable_x64(True):
    import jaxsmx

    probs = [_problem(c) for c in selected]
    calls = []
    for c, pr in zip(selected, probs, strict=True):
      fn = fns.get(c.function) or getattr(jaxsmx, c.function)
      calls.append((_call(fn, c, pr), [jnp.asarray(v) for v in pr.args.values()]))

    def table(inputs):
      return [call(*xs) for (call, _), xs in zip(calls, inputs, strict=True)]

    inputs = [xs for _, xs in calls]
    try:
      got = jax.jit(table).lower(inputs).compile(_COMPILER_OPTIONS)(inputs)
    except Exception:  # find the culprit: one program per case
      got = []
      for call, xs in calls:
        try:
          got.append(jax.jit(call)(*xs))
        except Exception as e:
          got.append(e)
    for c, pr, out in zip(selected, probs, got, strict=True):
      if isinstance(out, Exception):
        results[c.name] = CaseResult(
          c, float("nan"), False, f"{type(out).__name__}: {out}"[:200]
        )
        continue
      results[c.name] = _compare(c, pr, *out)
  return [results[c.name] for c in selected]


def _result_dtype(case: Case, prob: Problem) -> str:
  import jax.numpy as jnp

  dts = {
    nm: case.dtype if nm == case.wrt else (case.other_dtype or case.dtype)
    for nm in prob.args
  }
  if case.function == "sigmoid_binary_cross_entropy":  # optax: the logits' dtype
    return dts["logits"]
  return str(jnp.result_type(*dts.values()))


def _compare(case: Case, prob: Problem, value, grad) -> CaseResult:
  # the cotangent reaches the rule in the output's dtype: round it the same
  prob.cot = np.asarray(np.asarray(prob.cot).astype(value.dtype), np.float64)
  try:
    with np.errstate(all="ignore"):  # the references reach inf at the edges
      want = np.asarray(expected(case, prob), np.float64)
  except Exception as e:
    return CaseResult(
      case, float("nan"), False, f"reference: {type(e).__name__}: {e}"[:200]
    )
  got = np.asarray(grad.astype("float64"))
  dt_ok = str(grad.dtype) == case.dtype and str(value.dtype) == _result_dtype(
    case, prob
  )
  if got.shape != want.shape:
    return CaseResult(case, float("nan"), dt_ok, f"shape {got.shape} vs {want.shape}")
  if not dt_ok:
    want_dt = _result_dtype(case, prob)
    detail = f"dtypes {value.dtype}, {grad.dtype}; want {want_dt}, {case.dtype}"
    return CaseResult(case, float("nan"), False, detail)
  if np.isnan(got).any():
    return CaseResult(case, float("nan"), dt_ok, "NaN in the gradient")
  inf = np.isinf(want)
  if not np.array_equal(got[inf], want[inf]) or np.isinf(got[~inf]).any():
    return CaseResult(case, float("inf"), dt_ok, "infinities differ")
  fin = ~inf
  err = np.abs(got[fin] - want[fin]) / np.maximum(1.0, np.abs(want[fin]))
  return CaseResult(case, float(err.max()) if err.size else 0.0, dt_ok)


def bound(r: CaseResult) -> str:
  """The error as a bound that does not change between machines."""
  if r.detail:
    return r.detail
  eps = EPS[r.case.dtype]
  if r.error <= eps:
    return f"≤ {eps:.0e}"
  return f"{r.error:.1e}"
