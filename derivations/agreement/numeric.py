r"""Numeric agreement: each closed form against JAX autodiff of jaxsmx.

A :class:`Numeric` is data attached to the derivation step whose closed form
it checks (``Step(..., agrees=(Numeric(...),))``): the jaxsmx function, and
how JAX differentiates it (``jax.jacrev``, ``jax.grad``, ``jax.hessian`` or
``jax.vjp``, built by :func:`by_jacrev`, :func:`by_grad`, :func:`by_hessian`
and :func:`by_vjp`). :func:`attached` collects them from the derivations.

* The closed form is lambdified once, for general :math:`n`
  (:func:`~derivations.agreement.lambdify_general`), and evaluated for
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

:class:`AgreesWithJax` is the same comparison for a *definition*: a step
check that the displayed definition equals jaxsmx's value.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from ..engine import Check, Derivation, Verdict, ell, evaluate, i, sides
from ._lambdify import lambdify_general, pad

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
  """One numeric agreement check, attached to the step it checks.

  Attributes:
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
    formula_inputs: the formula's inputs when they are not ``inputs``'
      bases (with ``expected``).
    key: the derivation's key, filled in by :func:`attached`.
    step: the name of the step, filled in by :func:`attached`.
  """

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
  key: str = ""
  step: str = ""

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


def _formula(check: Numeric, d: Derivation):
  """The check's closed form, evaluated by lambdify, ready for one call."""
  step = d.step(check.step)
  expr = evaluate(step.formula, step.ctx or d.ctx)
  expr = expr.xreplace({s: sp.Float(v, 17) for s, v in check.params.items()})
  return expr


def _expected_all(
  check: Numeric, d: Derivation, sizes: Sequence[int]
) -> list[np.ndarray]:
  """The closed form at every size, from one lambdified general-n formula."""
  expr = _formula(check, d)
  inputs = list(check.formula_inputs or [b for b, _ in check.inputs])
  width = max(sizes)
  ells = [int(check.extra(size)[ell]) if check.extra else 0 for size in sizes]
  if check.expected is not None:
    # Custom comparison (the fused loss): evaluate one size at a time.
    out = []
    f = lambdify_general(expr, check.index, inputs, 1, width)
    for size, ell_ in zip(sizes, ells, strict=True):

      def formula(*arrays, size=size, ell_=ell_):
        padded = [
          pad(np.asarray(a_)[None], width)
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
      stacked.append(np.stack([pad(arrs[r], width) for arrs in per_size]))
    else:
      stacked.append(np.array([arrs[r] for arrs in per_size], dtype=np.float64))
  full = f(np.array(sizes), np.array(ells), *stacked)
  return [full[b][(slice(0, size),) * len(check.index)] for b, size in enumerate(sizes)]


COMPILER_OPTIONS = {
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

  compiled = jax.jit(table).lower(inputs).compile(COMPILER_OPTIONS)
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
# How JAX differentiates the function under test.


def by_jacrev(argnum=0, **kw):
  """``jax.jacrev`` of ``fn(*arrays, **kw)`` with respect to ``argnum``."""
  import jax

  def run(fn, *xs):
    return jax.jacrev(lambda *a: fn(*a, **kw), argnums=argnum)(*xs)

  return run


def by_grad(argnum=0, nargs=1, **kw):
  """``jax.grad`` with respect to ``argnum`` of the first ``nargs`` arrays."""
  import jax

  def run(fn, *xs):
    return jax.grad(lambda *a: fn(*a, **kw), argnums=argnum)(*xs[:nargs])

  return run


def by_hessian(nargs=1, **kw):
  """``jax.hessian`` of the first ``nargs`` arrays."""
  import jax

  def run(fn, *xs):
    return jax.hessian(lambda *a: fn(*a, **kw))(*xs[:nargs])

  return run


def by_vjp(argnum=0, nargs=1, **kw):
  """``jax.vjp`` with the last array as the cotangent."""
  import jax

  def run(fn, *xs):
    primals, cot = xs[:nargs], xs[-1]
    _, pull = jax.vjp(lambda *a: fn(*a, **kw), *primals)
    return pull(cot)[argnum]

  return run


def attached(derivations: Iterable[Derivation]) -> tuple[Numeric, ...]:
  """Every numeric check attached to the derivations' steps, in step order.

  Each gets its derivation's key and its step's name.
  """
  out = []
  for d in derivations:
    for s in d.steps:
      if s.agrees and not s.name:
        raise ValueError(
          f"{d.key}: a step with numeric checks needs a name (the checks find"
          f" its formula by it); step {s.label[:40]!r} has none. Fix: pass"
          " name=... to the Step."
        )
      out += [dataclasses.replace(c, key=d.key, step=s.name) for c in s.agrees]
  return tuple(out)


# ---------------------------------------------------------------------------
# Definitions against the code.


@dataclasses.dataclass(frozen=True)
class AgreesWithJax(Check):
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
    _, rhs = sides(step.expr)
    expr = evaluate(rhs, ctx)
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
      return Verdict(True, method)
    return Verdict(False, method, f"differs by {worst:.1e}")
