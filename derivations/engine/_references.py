"""Explicit concrete-n objects, the references of the Concrete checks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from ._algebra import (
  vec,
)
from ._symbols import (
  i,
  z,
)
from ._verify import (
  Concrete,
)

# ---------------------------------------------------------------------------
# Explicit concrete-n objects, the references of the Concrete checks.


def explicit_softmax(size: int, base: sp.IndexedBase = z) -> sp.Matrix:
  """Column vector softmax(base1..base<size>) in plain symbols."""
  xs = vec(base, size)
  total = sum(sp.exp(x) for x in xs)
  return sp.Matrix([sp.exp(x) / total for x in xs])


def gradient(f: sp.Expr, xs: Sequence[sp.Symbol]) -> sp.Matrix:
  """Column gradient of a scalar, via ``Matrix.jacobian``."""
  return sp.Matrix([f]).jacobian(list(xs)).T


@functools.cache
def jacobian_of(fn: Callable[[int], Any], wrt: sp.IndexedBase, size: int) -> sp.Matrix:
  """``Matrix.jacobian`` of an explicit function at size n (memoised per process).

  ``fn(size)`` returns a scalar expression or a column ``Matrix`` of outputs
  in the plain symbols of :func:`vec`.
  """
  out = fn(size)
  if not isinstance(out, sp.MatrixBase):
    out = sp.Matrix([out])
  return out.jacobian(vec(wrt, size))


def gradient_ref(
  fn: Callable[[int], Any], wrt: sp.IndexedBase
) -> Callable[[int], sp.Matrix]:
  """Reference for a Concrete check: the gradient of a scalar function."""
  return lambda size: jacobian_of(fn, wrt, size).T


VJP_SIZES = tuple(range(1, 7))


def vjp_check(
  fn: Callable[[int], Any],
  wrt: sp.IndexedBase,
  cotangent: sp.Basic,
  index: tuple[sp.Symbol, ...] = (i,),
  **kwargs,
) -> Concrete:
  """Concrete check of a VJP step: :math:`J^{\\mathsf T} g` from ``Matrix.jacobian``.

  ``cotangent`` is a scalar ``Symbol`` (a loss per example) or an
  ``IndexedBase`` (one cotangent per output).
  """

  def reference(size):
    jac = jacobian_of(fn, wrt, size)
    if isinstance(cotangent, sp.IndexedBase):
      cot = sp.Matrix(vec(cotangent, size))
    else:
      cot = sp.Matrix([cotangent])
    return jac.T * cot

  kwargs.setdefault("sizes", VJP_SIZES)
  kwargs.setdefault("what", "Matrix.jacobian(...).T g")
  return Concrete(reference, index, **kwargs)
