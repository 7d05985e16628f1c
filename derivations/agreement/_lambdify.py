r"""Closed forms evaluated as arrays: a general-n formula, lambdified once.

The closed forms are lambdified once each, for general :math:`n`, with
``modules="jax"`` (or NumPy) and a printer that turns every index into an
array axis: the free indices (:math:`i, j`) are the last axes, each sum adds
an axis that it then reduces, and a leading batch axis runs over several
sizes :math:`n` at once, padded to the largest size with the padding masked
out of every sum. One call then evaluates a formula at all sizes, with a
handful of array operations instead of one per entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy as sp

from ..engine import ell, n

RANK = 5  # batch axis + up to four index axes (two free, two nested sums)
FILL = 0.5  # value of padded entries: finite for every function here


def _grid(axis: int, width: int) -> np.ndarray:
  shape = [1] * RANK
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
        if self._depth >= RANK:
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

  rows = np.arange(batch).reshape((batch,) + (1,) * (RANK - 1))

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
  expr = expr.xreplace({n: nn, ell: el})
  free_args = [sp.Symbol(f"_i{r}") for r in range(len(free))]
  expr = expr.xreplace(dict(zip(free, free_args, strict=True)))
  args = [nn, el, *free_args] + [
    names[x].label if isinstance(x, sp.IndexedBase) else names[x] for x in inputs
  ]
  printer = _AxisPrinter(free_args, width, numpy)
  modules = [_helpers(batch, width, numpy), "numpy" if numpy else "jax"]
  f = sp.lambdify(args, expr, modules=modules, printer=printer)
  grids = [_grid(-(len(free) - r), width) for r in range(len(free))]
  lead = (batch,) + (1,) * (RANK - 1)

  def call(n_, ell_, *arrays):
    xs = []
    for x, a_ in zip(inputs, arrays, strict=True):
      a_ = jnp.asarray(a_)
      if isinstance(x, sp.IndexedBase):
        pad = jnp.full((batch, 1), FILL, a_.dtype)
        xs.append(jnp.concatenate([pad, a_], axis=1))  # 1-based indexing
      else:
        xs.append(a_.reshape(lead))
    out = f(np.reshape(n_, lead), np.reshape(ell_, lead), *grids, *xs)
    full = (batch,) + (1,) * (RANK - 1 - len(free)) + (width,) * len(free)
    out = jnp.broadcast_to(out, full)
    return np.asarray(out, dtype=np.float64).reshape((batch,) + (width,) * len(free))

  return call


def pad(x: np.ndarray, width: int) -> np.ndarray:
  pad = [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])]
  return np.pad(np.asarray(x, dtype=np.float64), pad, constant_values=FILL)


# XLA's CPU backend spends most of the time of these tiny programs in LLVM;
# its cheapest optimisation level compiles them several times faster and does
