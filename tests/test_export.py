"""Every public function round-trips through :mod:`jax.export`.

For each case of ``tests/public_cases.py``, value and gradient:
``export.export(jax.jit(f))`` on concrete shapes and on a symbolic batch
dimension ``b``, then ``serialize()``, ``export.deserialize(...)`` and
``.call(...)`` give the numbers that ``f`` gives. A symbolic export is called
at two batch sizes.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import export
from public_cases import CASES


def _specs(case, symbolic: bool):
  (b,) = export.symbolic_shape("b") if symbolic else (None,)
  specs = []
  for a, batched in zip(case.args, case.batched, strict=True):
    shape = (b, *a.shape[1:]) if symbolic and batched else a.shape
    specs.append(jax.ShapeDtypeStruct(shape, a.dtype))
  return specs


def _round_trip(f, specs):
  exported = export.export(jax.jit(f))(*specs)
  return export.deserialize(exported.serialize())


def _assert_same(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)


def _batch(case, n):
  return tuple(
    a[:n] if batched else a for a, batched in zip(case.args, case.batched, strict=True)
  )


@pytest.mark.parametrize("symbolic", [False, True], ids=["concrete", "symbolic"])
@pytest.mark.parametrize("what", ["value", "grad"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_round_trip(case, what, symbolic):
  f = case.value if what == "value" else case.grad
  restored = _round_trip(f, _specs(case, symbolic))
  sizes = [case.args[0].shape[0], 3] if symbolic else [case.args[0].shape[0]]
  for n in sizes:
    args = _batch(case, n)
    _assert_same(restored.call(*args), jax.jit(f)(*args))


def test_round_trip_catches_a_wrong_number():
  # the comparison fails on a restored program that computes something else
  case = CASES[0]
  restored = _round_trip(lambda x: case.value(x) * (1 + 1e-5), _specs(case, False))
  with pytest.raises(AssertionError):
    _assert_same(restored.call(*case.args), case.value(*case.args))
