r"""Every option, edge and dtype: jaxsmx's VJPs against the closed forms.

:mod:`.numeric` compares each closed form in its plain case. A
:class:`Case` runs a jaxsmx function with an option that changes its gradient
(``where`` per class and per example, label smoothing, ``ignore_index``,
``b``, z-loss, soft cap, bias, several vocabulary chunks, a reduction), at an
edge (empty slices, :math:`-\infty` logits, zero probabilities, ignored rows,
zero cotangents) or in float32 and 16-bit, always through ``jax.vjp`` with
random cotangents.

The expected gradient is the derivation's closed form (a step's formula,
lambdified once for general :math:`n`, named by a :class:`Term`) evaluated on
the slice the options define: masking means slicing, so row :math:`r` keeps
its classes :math:`\{k : m_{rk} = 1\}`, the closed form is evaluated at
:math:`n = \sum_k m_{rk}` on the kept entries and the masked entries get 0.
A :math:`-\infty` logit is evaluated as it stands, which is the limit (its
probability is 0). An empty slice, an ignored row or a zero cotangent gives 0.

The cases are data that each derivation module lists beside its derivations
(its ``cases(by_key)``); this module holds what they are made of (the
problem builders, :func:`term`, :func:`with_dtypes`) and the runner
(:func:`run_cases`), which compiles every case into one program.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from ..engine import Derivation, evaluate, i
from ._lambdify import FILL, lambdify_general
from .numeric import COMPILER_OPTIONS

ROWS, CLASSES = 4, 6
EPS = {"float64": 1e-10, "float32": 64 * 2.0**-23, "bfloat16": 4 * 2.0**-7}

gs = sp.Symbol("g", real=True)
alpha = sp.Symbol(r"\alpha", nonnegative=True)
lam = sp.Symbol(r"\lambda", nonnegative=True)
cap = sp.Symbol("c", positive=True)
NO_CAP = 1e8  # softcap=None is the limit c -> oo; c tanh(u/c) - u < 1e-15 here


@dataclasses.dataclass(frozen=True)
class Term:
  """A closed form: the step ``step`` of ``derivation``, free index ``index``.

  ``inputs`` maps each base or symbol of the formula to the problem array it
  reads (``"cot"`` is the cotangent); ``params`` gives scalar parameters
  their values. Terms compare and hash by key, step, inputs and values.
  """

  key: str
  step: str
  inputs: tuple[tuple[Any, str], ...]
  index: sp.Symbol | tuple[sp.Symbol, ...] | None = i
  params: tuple[tuple[sp.Symbol, float], ...] = ()
  derivation: Derivation | None = dataclasses.field(
    default=None, compare=False, repr=False
  )


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
    expect: ``problem -> gradient`` where ``term`` does not say it alone.
    value: the function's value must equal this too: a scalar definition
      (a :class:`Term` with ``index=None``, evaluated per row on the kept
      classes by :func:`sliced_value`) or ``problem -> value``.
    tolerance: replaces the dtype's tolerance :data:`EPS`: a number, or
      ``(problem, expected gradient) -> bound per entry`` derived for the
      case (from the dtype and the sizes); the error is then the largest
      ratio of the error to its bound, at most 1.
    path: the kernel path the case must take (the fused loss), or "".
    order: 1 compares the VJP; 2 the gradient of the VJP's inner product
      with the problem's ``direction`` (reverse over reverse, which
      differentiates the fwd and bwd rules themselves, as ``jax.hessian``
      of a composition may) with ``term``, a Hessian (two free indices)
      contracted with the direction on each slice.
  """

  function: str
  option: str
  wrt: str
  make: Callable[[np.random.Generator], Problem]
  term: Term | None
  dtype: str = "float64"
  other_dtype: str | None = None
  expect: Callable[..., np.ndarray] | None = None
  value: Term | Callable[..., np.ndarray] | None = None
  order: int = 1
  tolerance: float | Callable[[Problem, np.ndarray], np.ndarray] | None = None
  path: str = ""

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
    direction: the direction of a second-order case.
  """

  args: dict[str, np.ndarray]
  kwargs: dict[str, Any]
  cot: np.ndarray
  keep: np.ndarray | None = None
  zero: np.ndarray | None = None
  ell: np.ndarray | None = None
  fix: Callable[[np.ndarray, Problem], np.ndarray] | None = None
  direction: np.ndarray | None = None


# ---------------------------------------------------------------------------
# Drawing inputs.


def logits(rng, shape=(ROWS, CLASSES)):
  return 1.5 * rng.standard_normal(shape)


def probs(rng, shape=(ROWS, CLASSES)):
  v = rng.uniform(0.05, 1.0, shape)
  return v / v.sum(-1, keepdims=True)


def class_mask(rng, empty_row=True):
  """A class mask with 2..n-1 classes per row; the last row empty."""
  m = rng.uniform(size=(ROWS, CLASSES)) < 0.6
  m[:, 0] = True
  m[:, 1] = False
  if empty_row:
    m[-1] = False
  return m


def row_mask():
  return np.array([True, False, True, True])


def cotangent(rng, rows=ROWS):
  c = rng.standard_normal(rows)
  c[0] = 0.0  # a row that does not reach the output
  return c


# ---------------------------------------------------------------------------
# Evaluating a closed form on the slices.


@functools.cache
def _lambdified(term: Term, rows: int, width: int):
  d = term.derivation
  if d is None:
    raise ValueError(
      f"term {term.key}/{term.step} has no derivation: build it with term(d, ...)"
    )
  step = d.step(term.step)
  expr = evaluate(step.formula, step.ctx or d.ctx)
  expr = expr.xreplace({s: sp.Float(v, 17) for s, v in term.params})
  bases = [b for b, _ in term.inputs]
  if term.index is None:
    free = ()
  elif isinstance(term.index, tuple):
    free = term.index
  else:
    free = (term.index,)
  return lambdify_general(expr, free, bases, rows, width, numpy=True)


def _on_slices(term: Term, prob: Problem):
  """The term evaluated on each row's kept classes, in kept order.

  Returns ``(out, order, counts)``: ``out`` is ``[rows, width]`` (or
  ``[rows]`` for a scalar term) over the first ``counts[r]`` entries of row
  ``r``, whose classes are ``order[r, :counts[r]]``.
  """
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
      arrays.append(np.where(tail, FILL, v))
    else:
      arrays.append(np.broadcast_to(v, (rows,)))
  ell = np.ones(rows, int)
  if prob.ell is not None:
    pos = np.argmax(order == np.asarray(prob.ell)[:, None], axis=1)
    ell = pos + 1
  out = _lambdified(term, rows, width)(np.maximum(counts, 1), ell, *arrays)
  return out, order, counts


def sliced(term: Term, prob: Problem) -> np.ndarray:
  """The closed form on each row's kept classes, 0 elsewhere."""
  out, order, counts = _on_slices(term, prob)
  rows, width = order.shape
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


def sliced_value(term: Term, prob: Problem) -> np.ndarray:
  """A scalar definition on each row's kept classes: ``[rows]``.

  A row with nothing kept, an ignored row and a dropped row give 0.
  """
  out, _, counts = _on_slices(term, prob)
  out = np.where(counts == 0, 0.0, np.reshape(out, counts.shape))
  if prob.zero is not None:
    out = np.where(np.asarray(prob.zero), 0.0, out)
  return out


def sliced_hvp(term: Term, prob: Problem) -> np.ndarray:
  """A Hessian term times ``prob.direction`` on each row's kept classes.

  Scaled by the row's cotangent; 0 on masked classes, empty slices and rows
  whose cotangent is 0.
  """
  out, order, counts = _on_slices(term, prob)
  rows, width = order.shape
  direction = np.broadcast_to(np.asarray(prob.direction, np.float64), (rows, width))
  full = np.zeros((rows, width))
  for r in range(rows):
    kept = order[r, : counts[r]]
    hessian = out[r, : counts[r], : counts[r]]
    full[r, kept] = float(prob.cot[r]) * (hessian @ direction[r, kept])
  return full


def expected(case: Case, prob: Problem) -> np.ndarray:
  if case.expect is not None:
    return case.expect(prob)
  if case.order == 2:
    return sliced_hvp(case.term, prob)
  return sliced(case.term, prob)


# ---------------------------------------------------------------------------
# Making cases.

PARAMS = {"alpha": alpha, "lam": lam, "cap": cap}


def term(d: Derivation, step: str, *inputs, index=i, **params) -> Term:
  """The closed form of ``d.step(step)``; ``params`` by name (alpha, lam, cap)."""
  d.step(step)  # a missing step fails here, where the case is written
  values = tuple((PARAMS[k], v) for k, v in params.items())
  return Term(d.key, step, tuple(inputs), index, values, derivation=d)


def with_dtypes(
  base: Sequence[Case], options: Sequence[str] = ("plain",), mixed: bool = False
) -> list[Case]:
  """float32 and bfloat16 versions of the cases whose option is in ``options``.

  With ``mixed``, the 16-bit rows pair bfloat16 with float32 both ways (the
  input compared in one dtype, the other floating input in the other).
  """
  out = []
  for c in base:
    if c.option not in options:
      continue
    out.append(dataclasses.replace(c, dtype="float32"))
    if mixed:
      out.append(dataclasses.replace(c, dtype="bfloat16", other_dtype="float32"))
      out.append(dataclasses.replace(c, dtype="float32", other_dtype="bfloat16"))
    else:
      out.append(dataclasses.replace(c, dtype="bfloat16"))
  return out


# ---------------------------------------------------------------------------
# Running.


@dataclasses.dataclass(frozen=True)
class CaseResult:
  case: Case
  error: float  # largest error relative to max(1, |expected|); nan if not run
  dtype_ok: bool
  detail: str = ""
  paths: tuple[str, ...] = ()  # the fused loss's kernel paths the call took

  @property
  def ok(self) -> bool:
    return (
      not self.detail and self.dtype_ok and bool(self.error <= tolerance(self.case))
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
    cot = jnp.asarray(prob.cot).astype(value.dtype)
    if case.order == 1:
      (grad,) = pull(cot)
      return value, grad

    direction = jnp.asarray(prob.direction).astype(arrays[pos].dtype)

    def along(v):  # <direction, VJP at v>; its gradient differentiates both rules
      return jnp.sum(jax.vjp(f, v)[1](cot)[0] * direction)

    return value, jax.grad(along)(arrays[pos])

  return run


def run_cases(
  selected: Sequence[Case], fns: Mapping[str, Callable] | None = None
) -> list[CaseResult]:
  """Runs the cases in one compiled program, float64 enabled.

  Args:
    selected: the cases (:func:`derivations.cases` lists them all).
    fns: replacements for jaxsmx functions by name (for tests).

  Returns:
    One result per case, in order.
  """
  import jax
  import jax.numpy as jnp

  selected = tuple(selected)
  fns = dict(fns or {})
  results: dict[str, CaseResult] = {}
  with jax.enable_x64(True):
    import jaxsmx
    from jaxsmx._linear import record_paths

    probs = [_problem(c) for c in selected]
    calls = []
    for c, pr in zip(selected, probs, strict=True):
      fn = fns.get(c.function) or getattr(jaxsmx, c.function)
      calls.append((_call(fn, c, pr), [jnp.asarray(v) for v in pr.args.values()]))

    paths: dict[str, tuple[str, ...]] = {}

    def traced(c, call, *xs):
      # records the kernel paths the trace of this one call takes
      with record_paths() as taken:
        out = call(*xs)
      paths[c.name] = tuple(sorted(taken))
      return out

    def table(inputs):
      return [
        traced(c, call, *xs)
        for c, (call, _), xs in zip(selected, calls, inputs, strict=True)
      ]

    inputs = [xs for _, xs in calls]
    try:
      got = jax.jit(table).lower(inputs).compile(COMPILER_OPTIONS)(inputs)
    except Exception:  # find the culprit: one program per case
      got = []
      for c, (call, xs) in zip(selected, calls, strict=True):
        try:
          got.append(jax.jit(functools.partial(traced, c, call))(*xs))
        except Exception as e:
          got.append(e)
    for c, pr, out in zip(selected, probs, got, strict=True):
      if isinstance(out, Exception):
        results[c.name] = CaseResult(
          c, float("nan"), False, f"{type(out).__name__}: {out}"[:200]
        )
        continue
      took = paths.get(c.name, ())
      result = dataclasses.replace(_compare(c, pr, *out), paths=took)
      if c.path and c.path not in took:
        detail = f"took the kernel paths {', '.join(took) or 'none'}, not {c.path}"
        result = dataclasses.replace(result, detail=detail)
      results[c.name] = result
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
      want_value = _expected_value(case, prob)
  except Exception as e:
    return CaseResult(
      case, float("nan"), False, f"reference: {type(e).__name__}: {e}"[:200]
    )
  dt_ok = str(grad.dtype) == case.dtype and str(value.dtype) == _result_dtype(
    case, prob
  )
  if not dt_ok:
    want_dt = _result_dtype(case, prob)
    detail = f"dtypes {value.dtype}, {grad.dtype}; want {want_dt}, {case.dtype}"
    return CaseResult(case, float("nan"), False, detail)
  got = np.asarray(grad.astype("float64"))
  err, why = _error(got, want, "gradient")
  if why:
    return CaseResult(case, err, dt_ok, why)
  if callable(case.tolerance):
    bound_ = np.asarray(case.tolerance(prob, want), np.float64)
    err = float(np.max(np.abs(got - want) / bound_)) if got.size else 0.0
  if want_value is not None:
    got_value = np.asarray(value.astype("float64"))
    err_v, why = _error(got_value, want_value, "value")
    if why:
      return CaseResult(case, err_v, dt_ok, why)
    if err_v > tolerance(case):
      return CaseResult(case, err_v, dt_ok, f"value differs by {err_v:.1e}")
  return CaseResult(case, err, dt_ok)


def _expected_value(case: Case, prob: Problem) -> np.ndarray | None:
  if case.value is None:
    return None
  if isinstance(case.value, Term):
    return sliced_value(case.value, prob)
  return np.asarray(case.value(prob), np.float64)


def _error(got: np.ndarray, want: np.ndarray, what: str) -> tuple[float, str]:
  """``max |got - want| / max(1, |want|)``, or NaN and why it is not comparable."""
  if got.shape != want.shape:
    return float("nan"), f"{what}: shape {got.shape} vs {want.shape}"
  if np.isnan(got).any():
    return float("nan"), f"NaN in the {what}"
  inf = np.isinf(want)
  if not np.array_equal(got[inf], want[inf]) or np.isinf(got[~inf]).any():
    return float("inf"), f"{what}: infinities differ"
  fin = ~inf
  err = np.abs(got[fin] - want[fin]) / np.maximum(1.0, np.abs(want[fin]))
  return (float(err.max()) if err.size else 0.0), ""


def tolerance(case: Case) -> float:
  """The case's own tolerance, or its dtype's (1 for a bound per entry)."""
  if callable(case.tolerance):
    return 1.0
  return EPS[case.dtype] if case.tolerance is None else case.tolerance


def bound(r: CaseResult) -> str:
  """The error as a bound that does not change between machines."""
  if r.detail:
    return r.detail
  eps = tolerance(r.case)
  if callable(r.case.tolerance) and r.error <= eps:
    return "≤ its bound"
  if r.error <= eps:
    return f"≤ {eps:.0e}"
  return f"{r.error:.1e}"
