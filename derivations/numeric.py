r"""Numeric agreement: each closed form against JAX autodiff of jaxsmx.

A :class:`Numeric` names a step of a derivation (its closed form, for general
:math:`n`), the jaxsmx function, and how JAX differentiates that function
(``jax.jacrev``, ``jax.grad``, ``jax.hessian`` or ``jax.vjp``).

* The closed form is lambdified once, for general :math:`n`, with
  ``modules="jax"`` (see :func:`lambdify_general`), and evaluated for
  :math:`n = 2 \dots 8` in one batched call.
* The jaxsmx function is differentiated by JAX at the same points, in float64,
  all checks and sizes in one ``jax.jit`` program (one compile).
* The largest absolute difference over all sizes is the check's result; it
  must be at most :data:`TOLERANCE`.

The random points come from a NumPy generator seeded from the check's name and
:math:`n` (``zlib.crc32``, not ``hash``), so every run sees the same points.
The function under test is a parameter of :func:`run_numeric` and
:func:`run_numerics`, so a test can pass a function with a wrong ``bwd`` rule
and watch the check fail. Float64 is switched on only inside these functions
(``jax.enable_x64``), never globally.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from . import _core
from ._core import Derivation, i, j, lp, p, q, t, u

TOLERANCE = 1e-10

# How inputs are drawn, by kind.
LOGITS = "logits"  # normal, scale 1.5
WEIGHTS = "weights"  # positive, not normalised: sum(y) != 1 exercises a*sum(y)
PROBS = "probs"  # positive, normalised
POSITIVE = "positive"  # positive, not normalised
COTANGENT = "cotangent"  # normal
UNIT = "unit"  # uniform in (0, 1), for binary targets


def _draw(rng: np.random.Generator, kind: str, shape) -> np.ndarray:
  if kind == LOGITS:
    return 1.5 * rng.standard_normal(shape)
  if kind == WEIGHTS:
    return rng.uniform(0.1, 1.0, shape)
  if kind == PROBS:
    v = rng.uniform(0.05, 1.0, shape)
    return v / v.sum(axis=-1, keepdims=True)
  if kind == POSITIVE:
    return rng.uniform(0.2, 2.0, shape)
  if kind == COTANGENT:
    return rng.standard_normal(shape)
  if kind == UNIT:
    return rng.uniform(0.0, 1.0, shape)
  raise ValueError(kind)


@dataclasses.dataclass(frozen=True)
class Numeric:
  """One numeric agreement check.

  Attributes:
    key: the derivation's key.
    step: the name of the step whose closed form is compared.
    what: what is compared, for the report (e.g. "Jacobian").
    function: the jaxsmx attribute under test.
    index: the free indices of the closed form (rows, then columns).
    inputs: ``(base_or_symbol, kind)`` pairs; an ``IndexedBase`` draws a
      vector of length n, a ``Symbol`` a scalar. The order is the order of
      the arrays handed to ``autodiff``.
    autodiff: ``(fn, *arrays) -> array``: the function's derivative by JAX.
    reference: how ``autodiff`` differentiates, for the report.
    params: numeric values of scalar parameters (e.g. the smoothing).
    extra: integer free symbols of the formula (the label), by n.
    expected: ``(formula, arrays) -> array`` for checks whose closed form is
      not compared directly (the fused loss); default: ``formula(*arrays)``.
  """

  key: str
  step: str
  what: str
  function: str
  index: tuple[sp.Symbol, ...]
  inputs: tuple[tuple[Any, str], ...]
  autodiff: Callable[..., Any]
  reference: str
  params: Mapping[sp.Symbol, float] = dataclasses.field(default_factory=dict)
  extra: Callable[[int], Mapping[sp.Symbol, int]] | None = None
  expected: Callable[..., Any] | None = None
  formula_inputs: tuple[Any, ...] | None = None

  @property
  def name(self) -> str:
    return f"{self.key}/{self.step}/{self.what}"


@dataclasses.dataclass(frozen=True)
class NumericResult:
  check: Numeric
  max_error: float  # nan when it could not run
  sizes: tuple[int, ...]
  error: str = ""  # why it could not run

  @property
  def ok(self) -> bool:
    return not self.error and bool(self.max_error <= TOLERANCE)

  @property
  def bucket(self) -> str:
    """The error as a reproducible bound, for the report."""
    return bucket(self.max_error) if not self.error else "not run"


def bucket(err: float) -> str:
  """Formats an error so that the text does not change between machines.

  Float64 round-off differs in its last bits across CPUs and XLA versions, so
  a passing error is reported as a bound; only a failure shows its size.
  """
  if not np.isfinite(err):
    return "NaN"
  for bound in (1e-12, 1e-10):
    if err < bound:
      return f"< {bound:.0e}"
  return f"{err:.0e}"


def _seed(name: str, size: int) -> int:
  return zlib.crc32(f"{name}/{size}".encode())


def _arrays(check: Numeric, size: int) -> list[np.ndarray]:
  rng = np.random.default_rng(_seed(check.name, size))
  out = []
  for base, kind in check.inputs:
    shape = (size,) if isinstance(base, sp.IndexedBase) else ()
    if isinstance(base, tuple):  # (name, shape_fn) for the fused loss
      shape = base[1](size)
    out.append(_draw(rng, kind, shape))
  return out


# ---------------------------------------------------------------------------
# Lambdifying a general-n formula.
#
# The closed forms are lambdified once each, for general n, with
# modules="jax" and a printer that turns every index into an array axis: the
# free indices (i, j) are the last axes, each sum adds an axis that it then
# reduces, and a leading batch axis runs over the sizes n = 2..8 at once,
# padded to the largest size with the padding masked out of every sum. One
# call then evaluates a formula at all sizes, with a handful of array
# operations instead of one per entry.

_RANK = 5  # batch axis + up to four index axes (two free, two nested sums)
_FILL = 0.5  # value of padded entries: finite for every function here


def _grid(axis: int, width: int) -> np.ndarray:
  shape = [1] * _RANK
  shape[axis] = width
  return np.arange(1, width + 1).reshape(shape)


class _AxisPrinter:
  """Factory for a JaxPrinter that prints indices as array axes."""

  def __new__(cls, free: Sequence[sp.Symbol], width: int, numpy: bool = False):
    from sympy.printing.numpy import JaxPrinter, NumPyPrinter

    class Printer(NumPyPrinter if numpy else JaxPrinter):
      def __init__(self):
        super().__init__()
        self._depth = len(free)

      def _print_Sum(self, expr):
        if len(expr.limits) != 1:
          return self._print(
            sp.Sum(sp.Sum(expr.function, *expr.limits[:-1]), expr.limits[-1])
          )
        idx, lo, hi = expr.limits[0]
        if lo != 1 or hi != sp.Symbol("n"):
          raise ValueError(f"only sums over 1..n are lambdified, got {expr.limits}")
        self._depth += 1
        if self._depth >= _RANK:
          raise ValueError("sums nested too deeply to lambdify")
        axis = -self._depth
        body = self._print(expr.function)
        self._depth -= 1
        return f"_sum(lambda {self._print(idx)}: {body}, {axis}, n)"

      def _print_KroneckerDelta(self, expr):
        a_, b_ = (self._print(x) for x in expr.args)
        return f"_delta({a_}, {b_})"

      def _print_Indexed(self, expr):
        (idx,) = expr.indices
        return f"_at({self._print(expr.base.label)}, {self._print(idx)})"

    del width
    return Printer()


def _helpers(batch: int, width: int, numpy: bool = False) -> dict:
  if numpy:
    jnp = np
  else:
    import jax.numpy as jnp

  rows = np.arange(batch).reshape((batch,) + (1,) * (_RANK - 1))

  def _sum(body, axis, size):
    k = _grid(axis, width)
    v = body(k)
    mask = k <= size
    shape = jnp.broadcast_shapes(jnp.shape(v), mask.shape)
    v = jnp.broadcast_to(v, shape)
    return jnp.sum(jnp.where(mask, v, 0.0), axis=axis, keepdims=True)

  def _delta(x, y):
    return jnp.where(x == y, 1.0, 0.0)

  def _at(base, idx):
    return base[rows, idx]

  return {"_sum": _sum, "_delta": _delta, "_at": _at}


def lambdify_general(
  expr: sp.Expr,
  free: Sequence[sp.Symbol],
  inputs: Sequence[Any],
  batch: int,
  width: int,
  numpy: bool = False,
):
  """Lambdifies a general-n expression for a batch of sizes.

  Args:
    expr: the closed form, with ``Indexed`` inputs, ``KroneckerDelta`` and
      sums over ``1..n``; free indices ``free``.
    free: the free indices, in output order.
    inputs: the ``IndexedBase`` and scalar ``Symbol`` inputs, in call order.
    batch: the number of sizes evaluated at once.
    width: the largest size.
    numpy: evaluate with NumPy instead of JAX (no compiles, for small
      one-off evaluations).

  Returns:
    ``f(n, ell, *arrays)``: ``n`` and ``ell`` of shape ``[batch]``; each
    vector input ``[batch, width]`` (padded), each scalar ``[batch]``; the
    result ``[batch, width]`` or ``[batch, width, width]``.
  """
  if numpy:
    jnp = np
  else:
    import jax.numpy as jnp

  # Python-safe names for the inputs (an IndexedBase may be called \ell).
  names = {}
  for r, x in enumerate(inputs):
    if isinstance(x, sp.IndexedBase):
      names[x] = sp.IndexedBase(f"_v{r}")
    else:
      names[x] = sp.Symbol(f"_s{r}")
  expr = expr.xreplace(names)
  nn, el = sp.Symbol("n"), sp.Symbol("ell")
  expr = expr.xreplace({_core.n: nn, _core.ell: el})
  free_args = [sp.Symbol(f"_i{r}") for r in range(len(free))]
  expr = expr.xreplace(dict(zip(free, free_args, strict=True)))
  args = [nn, el, *free_args] + [
    names[x].label if isinstance(x, sp.IndexedBase) else names[x] for x in inputs
  ]
  printer = _AxisPrinter(free_args, width, numpy)
  modules = [_helpers(batch, width, numpy), "numpy" if numpy else "jax"]
  f = sp.lambdify(args, expr, modules=modules, printer=printer)
  grids = [_grid(-(len(free) - r), width) for r in range(len(free))]
  lead = (batch,) + (1,) * (_RANK - 1)

  def call(n_, ell_, *arrays):
    xs = []
    for x, a_ in zip(inputs, arrays, strict=True):
      a_ = jnp.asarray(a_)
      if isinstance(x, sp.IndexedBase):
        pad = jnp.full((batch, 1), _FILL, a_.dtype)
        xs.append(jnp.concatenate([pad, a_], axis=1))  # 1-based indexing
      else:
        xs.append(a_.reshape(lead))
    out = f(np.reshape(n_, lead), np.reshape(ell_, lead), *grids, *xs)
    full = (batch,) + (1,) * (_RANK - 1 - len(free)) + (width,) * len(free)
    out = jnp.broadcast_to(out, full)
    return np.asarray(out, dtype=np.float64).reshape((batch,) + (width,) * len(free))

  return call


def _formula(check: Numeric, d: Derivation):
  """The check's closed form, evaluated by lambdify, ready for one call."""
  step = d.step(check.step)
  expr = _core.evaluate(step.formula, step.ctx or d.ctx)
  expr = expr.xreplace({s: sp.Float(v, 17) for s, v in check.params.items()})
  return expr


def _expected_all(
  check: Numeric, d: Derivation, sizes: Sequence[int]
) -> list[np.ndarray]:
  """The closed form at every size, from one lambdified general-n formula."""
  expr = _formula(check, d)
  inputs = list(check.formula_inputs or [b for b, _ in check.inputs])
  width = max(sizes)
  ells = [int(check.extra(size)[_core.ell]) if check.extra else 0 for size in sizes]
  if check.expected is not None:
    # Custom comparison (the fused loss): evaluate one size at a time.
    out = []
    f = lambdify_general(expr, check.index, inputs, 1, width)
    for size, ell_ in zip(sizes, ells, strict=True):

      def formula(*arrays, size=size, ell_=ell_):
        padded = [
          _pad(np.asarray(a_)[None], width)
          if isinstance(b, sp.IndexedBase)
          else np.asarray(a_).reshape(1)
          for b, a_ in zip(inputs, arrays, strict=True)
        ]
        full = f(np.array([size]), np.array([ell_]), *padded)[0]
        return full[(slice(0, size),) * len(check.index)]

      out.append(
        np.asarray(check.expected(formula, *_arrays(check, size)), dtype=np.float64)
      )
    return out
  f = lambdify_general(expr, check.index, inputs, len(sizes), width)
  per_size = [_arrays(check, size) for size in sizes]
  stacked = []
  for r, b in enumerate(inputs):
    if isinstance(b, sp.IndexedBase):
      stacked.append(np.stack([_pad(arrs[r], width) for arrs in per_size]))
    else:
      stacked.append(np.array([arrs[r] for arrs in per_size], dtype=np.float64))
  full = f(np.array(sizes), np.array(ells), *stacked)
  return [full[b][(slice(0, size),) * len(check.index)] for b, size in enumerate(sizes)]


def _pad(x: np.ndarray, width: int) -> np.ndarray:
  pad = [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])]
  return np.pad(np.asarray(x, dtype=np.float64), pad, constant_values=_FILL)


# XLA's CPU backend spends most of the time of these tiny programs in LLVM;
# its cheapest optimisation level compiles them several times faster and does
# not change float64 results beyond round-off.
_COMPILER_OPTIONS = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
}


def _autodiff_all(checks, fns, sizes):
  """JAX derivatives of every check at every size, in one compiled program.

  One ``jax.jit`` for the whole table keeps the compile count at one; the
  inputs are the same seeded arrays the closed forms are evaluated at.
  """
  import jax
  import jax.numpy as jnp

  inputs = [
    [[jnp.asarray(x) for x in _arrays(c, size)] for c in checks] for size in sizes
  ]

  def table(inputs):
    return [
      [c.autodiff(f, *xs) for c, f, xs in zip(checks, fns, row, strict=True)]
      for row in inputs
    ]

  compiled = jax.jit(table).lower(inputs).compile(_COMPILER_OPTIONS)
  out = compiled(inputs)
  return [[np.asarray(x, dtype=np.float64) for x in row] for row in out]


def run_numerics(
  checks: Sequence[Numeric],
  derivations: Mapping[str, Derivation],
  fns: Mapping[str, Callable] | None = None,
  sizes: Sequence[int] = tuple(range(2, 9)),
) -> list[NumericResult]:
  """Compares each closed form with JAX autodiff of the function under test.

  Args:
    checks: what to compare.
    derivations: the derivations by key, holding the steps the checks name.
    fns: the functions under test by jaxsmx name; a name not given is looked
      up in ``jaxsmx``.
    sizes: the class counts n.

  Returns:
    One result per check: the largest absolute difference over all sizes, or
    NaN and an error message if the function is missing or raises.
  """
  import jax

  fns = dict(fns or {})
  resolved, results = [], {}
  for c in checks:
    fn = fns.get(c.function)
    if fn is None:
      import jaxsmx

      fn = getattr(jaxsmx, c.function, None)
    if fn is None:
      results[c.name] = NumericResult(
        c, float("nan"), tuple(sizes), f"jaxsmx.{c.function} not found"
      )
    resolved.append(fn)
  runnable = [(c, f) for c, f in zip(checks, resolved, strict=True) if f is not None]
  with jax.enable_x64(True):
    try:
      table = _autodiff_all([c for c, _ in runnable], [f for _, f in runnable], sizes)
      per_check = {
        c.name: [row[r] for row in table] for r, (c, _) in enumerate(runnable)
      }
    except Exception:  # find the culprit: one program per check
      per_check = {}
      for c, f in runnable:
        try:
          got = _autodiff_all([c], [f], sizes)
          per_check[c.name] = [row[0] for row in got]
        except Exception as e:
          results[c.name] = NumericResult(
            c, float("nan"), tuple(sizes), f"{type(e).__name__}: {e}"[:300]
          )
    for c, _ in runnable:
      if c.name in results:
        continue
      results[c.name] = _compare(c, derivations[c.key], sizes, per_check[c.name])
  return [results[c.name] for c in checks]


def _compare(check, d, sizes, got_by_size) -> NumericResult:
  try:
    wanted = _expected_all(check, d, sizes)
  except Exception as e:  # a formula that cannot be evaluated fails its check
    return NumericResult(
      check, float("nan"), tuple(sizes), f"{type(e).__name__}: {e}"[:300]
    )
  worst = 0.0
  for size, want, got in zip(sizes, wanted, got_by_size, strict=True):
    if want.size != got.size:
      return NumericResult(
        check,
        float("nan"),
        tuple(sizes),
        f"n={size}: shape {want.shape} vs {got.shape}",
      )
    err = float(np.max(np.abs(want.reshape(got.shape) - got))) if got.size else 0.0
    if not np.isfinite(err):
      return NumericResult(check, float("nan"), tuple(sizes), f"n={size}: not finite")
    worst = max(worst, err)
  return NumericResult(check, worst, tuple(sizes))


def run_numeric(
  check: Numeric,
  derivation: Derivation,
  fn: Callable | None = None,
  sizes: Sequence[int] = tuple(range(2, 9)),
) -> NumericResult:
  """One check; ``fn`` replaces ``jaxsmx.<check.function>`` when given."""
  fns = {check.function: fn} if fn is not None else None
  return run_numerics([check], {check.key: derivation}, fns, sizes)[0]


# ---------------------------------------------------------------------------
# The checks.


def _jac(argnum=0, **kw):
  import jax

  def run(fn, *xs):
    return jax.jacrev(lambda *a: fn(*a, **kw), argnums=argnum)(*xs)

  return run


def _grad(argnum=0, nargs=1, **kw):
  import jax

  def run(fn, *xs):
    return jax.grad(lambda *a: fn(*a, **kw), argnums=argnum)(*xs[:nargs])

  return run


def _hess(nargs=1, **kw):
  import jax

  def run(fn, *xs):
    return jax.hessian(lambda *a: fn(*a, **kw))(*xs[:nargs])

  return run


def _vjp(argnum=0, nargs=1, **kw):
  """VJP with the last array as the cotangent."""
  import jax

  def run(fn, *xs):
    primals, cot = xs[:nargs], xs[-1]
    _, pull = jax.vjp(lambda *a: fn(*a, **kw), *primals)
    return pull(cot)[argnum]

  return run


def _with_label(inner, label_of):
  """Passes the integer label (0-based) as the second argument."""
  import jax.numpy as jnp

  def run(fn, z_, *rest):
    lab = jnp.asarray(label_of(z_.shape[-1]), dtype=jnp.int32)
    return inner(lambda zz, *r, **kw: fn(zz, lab, *r, **kw), z_, *rest)

  return run


def _smooth_label(size: int) -> dict:
  return {_core.ell: (size + 1) // 2}


def _bce_hessian(fn, z_, y_):
  import jax
  import jax.numpy as jnp

  return jax.hessian(lambda zz: jnp.sum(fn(zz, y_)))(z_)


def _diag_expected(formula, *arrays):
  import jax.numpy as jnp

  return np.diag(np.asarray(formula(*[jnp.asarray(x) for x in arrays])).reshape(-1))


# The fused loss: x [2, 3], w [3, n], bias [n], label 0 for both rows.
_ROWS, _HIDDEN = 2, 3
_LINEAR_PARAMS = {
  sp.Symbol(r"\alpha", nonnegative=True): 0.1,
  sp.Symbol(r"\lambda", nonnegative=True): 0.05,
  sp.Symbol("c", positive=True): 2.0,
}
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


def numeric_checks() -> tuple[Numeric, ...]:
  """Every numeric agreement check, in report order."""
  z, y, g = _core.z, _core.y, _core.g
  gs = sp.Symbol("g", real=True)
  alpha = sp.Symbol(r"\alpha", nonnegative=True)
  checks = [
    Numeric(
      "softmax",
      "jacobian",
      "Jacobian",
      "softmax",
      (i, j),
      ((z, LOGITS),),
      _jac(),
      "jax.jacrev",
    ),
    Numeric(
      "softmax",
      "vjp",
      "VJP",
      "softmax",
      (i,),
      ((z, LOGITS), (g, COTANGENT)),
      _vjp(),
      "jax.vjp",
    ),
    Numeric(
      "log_softmax",
      "jacobian",
      "Jacobian",
      "log_softmax",
      (i, j),
      ((z, LOGITS),),
      _jac(),
      "jax.jacrev",
    ),
    Numeric(
      "log_softmax",
      "vjp",
      "VJP",
      "log_softmax",
      (j,),
      ((z, LOGITS), (g, COTANGENT)),
      _vjp(),
      "jax.vjp",
    ),
    Numeric(
      "logsumexp",
      "gradient",
      "gradient",
      "logsumexp",
      (i,),
      ((z, LOGITS),),
      _grad(),
      "jax.grad",
    ),
    Numeric(
      "logsumexp",
      "hessian",
      "Hessian",
      "logsumexp",
      (i, j),
      ((z, LOGITS),),
      _hess(),
      "jax.hessian",
    ),
    Numeric(
      "logsumexp",
      "vjp",
      "VJP",
      "logsumexp",
      (i,),
      ((z, LOGITS), (gs, COTANGENT)),
      _vjp(),
      "jax.vjp",
    ),
    Numeric(
      "softmax_cross_entropy",
      "grad_z",
      "gradient wrt logits",
      "softmax_cross_entropy",
      (i,),
      ((z, LOGITS), (y, WEIGHTS)),
      _grad(0, 2),
      "jax.grad",
    ),
    Numeric(
      "softmax_cross_entropy",
      "grad_y",
      "gradient wrt labels",
      "softmax_cross_entropy",
      (i,),
      ((z, LOGITS), (y, WEIGHTS)),
      _grad(1, 2),
      "jax.grad",
    ),
    Numeric(
      "softmax_cross_entropy",
      "hessian",
      "Hessian wrt logits",
      "softmax_cross_entropy",
      (i, j),
      ((z, LOGITS), (y, WEIGHTS)),
      lambda fn, z_, y_: _hess(1)(lambda zz: fn(zz, y_), z_),
      "jax.hessian",
    ),
    Numeric(
      "softmax_cross_entropy",
      "vjp_z",
      "VJP wrt logits",
      "softmax_cross_entropy",
      (i,),
      ((z, LOGITS), (y, WEIGHTS), (gs, COTANGENT)),
      _vjp(0, 2),
      "jax.vjp",
    ),
    Numeric(
      "softmax_cross_entropy",
      "vjp_y",
      "VJP wrt labels",
      "softmax_cross_entropy",
      (i,),
      ((z, LOGITS), (y, WEIGHTS), (gs, COTANGENT)),
      _vjp(1, 2),
      "jax.vjp",
    ),
    Numeric(
      "label_smoothing",
      "grad_z",
      "gradient, α = 0",
      "softmax_cross_entropy_with_integer_labels",
      (i,),
      ((z, LOGITS),),
      _with_label(_grad(), lambda size: (size + 1) // 2 - 1),
      "jax.grad",
      params={alpha: 0.0},
      extra=_smooth_label,
    ),
    Numeric(
      "label_smoothing",
      "grad_z",
      "gradient, α = 0.1",
      "softmax_cross_entropy_with_integer_labels",
      (i,),
      ((z, LOGITS),),
      _with_label(_grad(label_smoothing=0.1), lambda size: (size + 1) // 2 - 1),
      "jax.grad",
      params={alpha: 0.1},
      extra=_smooth_label,
    ),
    Numeric(
      "label_smoothing",
      "vjp_z",
      "VJP, α = 0.3",
      "softmax_cross_entropy_with_integer_labels",
      (i,),
      ((z, LOGITS), (gs, COTANGENT)),
      _with_label(_vjp(label_smoothing=0.3), lambda size: (size + 1) // 2 - 1),
      "jax.vjp",
      params={alpha: 0.3},
      extra=_smooth_label,
    ),
    Numeric(
      "sigmoid_binary_cross_entropy",
      "vjp_z",
      "VJP wrt logits",
      "sigmoid_binary_cross_entropy",
      (i,),
      ((z, LOGITS), (y, UNIT), (g, COTANGENT)),
      _vjp(0, 2),
      "jax.vjp",
    ),
    Numeric(
      "sigmoid_binary_cross_entropy",
      "vjp_y",
      "VJP wrt labels",
      "sigmoid_binary_cross_entropy",
      (i,),
      ((z, LOGITS), (y, UNIT), (g, COTANGENT)),
      _vjp(1, 2),
      "jax.vjp",
    ),
    Numeric(
      "sigmoid_binary_cross_entropy",
      "hessian",
      "Hessian of the sum",
      "sigmoid_binary_cross_entropy",
      (i,),
      ((z, LOGITS), (y, UNIT)),
      _bce_hessian,
      "jax.hessian",
      expected=_diag_expected,
    ),
    Numeric(
      "softmax_entropy",
      "grad",
      "gradient",
      "softmax_entropy",
      (i,),
      ((z, LOGITS),),
      _grad(),
      "jax.grad",
    ),
    Numeric(
      "softmax_entropy",
      "hessian",
      "Hessian",
      "softmax_entropy",
      (i, j),
      ((z, LOGITS),),
      _hess(),
      "jax.hessian",
    ),
    Numeric(
      "softmax_entropy",
      "vjp",
      "VJP",
      "softmax_entropy",
      (i,),
      ((z, LOGITS), (gs, COTANGENT)),
      _vjp(),
      "jax.vjp",
    ),
    Numeric(
      "entropy", "grad", "gradient", "entropy", (i,), ((p, PROBS),), _grad(), "jax.grad"
    ),
    Numeric(
      "entropy",
      "hessian",
      "Hessian",
      "entropy",
      (i, j),
      ((p, PROBS),),
      _hess(),
      "jax.hessian",
    ),
    Numeric(
      "entropy",
      "vjp",
      "VJP",
      "entropy",
      (i,),
      ((p, POSITIVE), (gs, COTANGENT)),
      _vjp(),
      "jax.vjp",
    ),
    Numeric(
      "cross_entropy",
      "grad_p",
      "gradient wrt p",
      "cross_entropy",
      (i,),
      ((p, PROBS), (q, PROBS)),
      _grad(0, 2),
      "jax.grad",
    ),
    Numeric(
      "cross_entropy",
      "grad_q",
      "gradient wrt q",
      "cross_entropy",
      (i,),
      ((p, PROBS), (q, PROBS)),
      _grad(1, 2),
      "jax.grad",
    ),
    Numeric(
      "cross_entropy",
      "vjp_q",
      "VJP wrt q",
      "cross_entropy",
      (i,),
      ((p, POSITIVE), (q, POSITIVE), (gs, COTANGENT)),
      _vjp(1, 2),
      "jax.vjp",
    ),
    Numeric(
      "kl_divergence",
      "grad_l",
      "gradient wrt log-predictions",
      "kl_divergence",
      (i,),
      ((lp, LOGITS), (t, PROBS)),
      _grad(0, 2),
      "jax.grad",
    ),
    Numeric(
      "kl_divergence",
      "grad_t",
      "gradient wrt targets",
      "kl_divergence",
      (i,),
      ((lp, LOGITS), (t, PROBS)),
      _grad(1, 2),
      "jax.grad",
    ),
    Numeric(
      "kl_divergence",
      "vjp_t",
      "VJP wrt targets",
      "kl_divergence",
      (i,),
      ((lp, LOGITS), (t, POSITIVE), (gs, COTANGENT)),
      _vjp(1, 2),
      "jax.vjp",
    ),
    Numeric(
      "linear_softmax_cross_entropy",
      "grad_u",
      "gradients wrt x, w, bias",
      "linear_softmax_cross_entropy",
      (i,),
      (
        (("x", lambda size: (_ROWS, _HIDDEN)), LOGITS),
        (("w", lambda size: (_HIDDEN, size)), LOGITS),
        (("b", lambda size: (size,)), LOGITS),
      ),
      _linear_autodiff,
      "jax.grad",
      params=_LINEAR_PARAMS,
      extra=lambda size: {_core.ell: 1},
      expected=_linear_expected,
      formula_inputs=(u,),
    ),
  ]
  return tuple(checks)


# ---------------------------------------------------------------------------
# Definitions against the code.


@dataclasses.dataclass(frozen=True)
class AgreesWithJax(_core.Check):
  """The displayed definition, lambdified, equals jaxsmx's value.

  At seeded random points for n = 2..8, in float64: the step's right-hand
  side (the object the other checks substitute) against ``value(jaxsmx,
  *arrays)``, so that a definition that differs from the code fails.

  Attributes:
    value: ``(jaxsmx_module, *arrays) -> array``, ``[n]`` or a scalar.
    inputs: ``(base, kind)`` pairs, drawn as in :class:`Numeric`.
    index: the free indices of the right-hand side (``()`` for a scalar).
    what: the call, for the report.
  """

  value: Callable[..., Any]
  inputs: tuple[tuple[Any, str], ...]
  index: tuple[sp.Symbol, ...] = (i,)
  what: str = "jaxsmx"

  def run(self, step, ctx):
    import jax

    import jaxsmx

    method = f"definition = {self.what} at random points, n = 2..8"
    _, rhs = _core._sides(step.expr)
    expr = _core.evaluate(rhs, ctx)
    bases = [b for b, _ in self.inputs]
    worst = 0.0
    for size in range(2, 9):
      rng = np.random.default_rng(_seed(f"definition/{step.label}", size))
      arrays = [_draw(rng, kind, (size,)) for _, kind in self.inputs]
      f = lambdify_general(expr, self.index, bases, 1, size, numpy=True)
      want = f(np.array([size]), np.array([1]), *[x[None] for x in arrays])[0]
      with jax.enable_x64(True):
        got = np.asarray(self.value(jaxsmx, *arrays), dtype=np.float64)
      worst = max(worst, float(np.max(np.abs(want.reshape(got.shape) - got))))
    if worst <= TOLERANCE:
      return _core.Verdict(True, method)
    return _core.Verdict(False, method, f"differs by {worst:.1e}")
