"""Every public function round-trips through :mod:`jax.export`.

For each case of ``tests/public_cases.py``, value and gradient together:
``export.export(jax.jit(f))`` on concrete shapes, on a symbolic batch
dimension ``b``, on a symbolic class axis ``c`` (every dimension of size
``C``: logits, soft labels, masks, ``b``, a vocabulary) and on both, then
``serialize()``, ``export.deserialize(...)`` and ``.call(...)`` give the
numbers that ``f`` gives. A symbolic export is called at two sizes of each
symbolic dimension: serving code exports once for every batch and every
vocabulary size.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import export
from public_cases import CASES, C

MODES = {
  "concrete": (False, False),
  "symbolic batch": (True, False),
  "symbolic classes": (False, True),
  "symbolic batch and classes": (True, True),
}
# the fused loss's chunk choice still needs a concrete vocabulary; its own
# symbolic-vocabulary cases come with its package
CLASS_CASES = [c for c in CASES if not c.name.startswith("linear_ce")]


def _specs(case, batch: bool, classes: bool):
  b, c = export.symbolic_shape("b, c")
  specs = []
  for a, batched in zip(case.args, case.batched, strict=True):
    shape = tuple(c if classes and d == C else d for d in a.shape)
    if batch and batched:
      shape = (b, *shape[1:])
    specs.append(jax.ShapeDtypeStruct(shape, a.dtype))
  return specs


def _round_trip(f, specs):
  exported = export.export(jax.jit(f))(*specs)
  return export.deserialize(exported.serialize())


def _assert_same(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)


def _sized(case, n, c):
  """The case's arrays with n rows (batched ones) and c classes (every
  dimension of size C)."""
  out = []
  for a, batched in zip(case.args, case.batched, strict=True):
    a = a[tuple(slice(0, c) if d == C else slice(None) for d in a.shape)]
    out.append(a[:n] if batched else a)
  return tuple(out)


def _value_and_grad(case):
  return lambda *args: (case.value(*args), case.grad(*args))


PARAMS = [
  pytest.param(case, mode, id=f"{case.name}-{mode}")
  for case in CASES
  for mode, (_, classes) in MODES.items()
  if case in CLASS_CASES or not classes
]


@pytest.mark.parametrize(("case", "mode"), PARAMS)
def test_round_trip(case, mode):
  batch, classes = MODES[mode]
  f = _value_and_grad(case)
  restored = _round_trip(f, _specs(case, batch, classes))
  n = case.args[0].shape[0]
  sizes = [(n, C)] + [(3 if batch else n, 3 if classes else C)] * (batch or classes)
  for n, c in sizes:
    args = _sized(case, n, c)
    _assert_same(restored.call(*args), jax.jit(f)(*args))


def test_round_trip_catches_a_wrong_number():
  # the comparison fails on a restored program that computes something else
  case = CASES[0]
  specs = _specs(case, False, False)
  restored = _round_trip(lambda x: case.value(x) * (1 + 1e-5), specs)
  with pytest.raises(AssertionError):
    _assert_same(restored.call(*case.args), case.value(*case.args))
