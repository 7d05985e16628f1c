"""Every public function round-trips through :mod:`jax.export`.

For each case of ``tests/public_cases.py``, value and gradient together:
``export.export(jax.jit(f))`` on concrete shapes, on a symbolic batch
dimension ``b``, on a symbolic class axis ``c`` (every dimension of size
``C``: logits, soft labels, masks, ``b``, a vocabulary) and on both, then
``serialize()``, ``export.deserialize(...)`` and ``.call(...)`` give the
numbers that ``f`` gives. A symbolic export is called at two sizes of each
symbolic dimension: serving code exports once for every batch and every
vocabulary size. The fused loss with a symbolic vocabulary is also run in 16
bits and over more than one chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from public_cases import CASES, C

import jaxsmx

MODES = {
  "concrete": (False, False),
  "symbolic batch": (True, False),
  "symbolic classes": (False, True),
  "symbolic batch and classes": (True, True),
}


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
    # a few float32 ulps of the largest entry: the restored program may sum
    # in another order than the one compiled for concrete shapes
    w64 = np.abs(np.asarray(w, np.float64))
    atol = 1e-6 * float(np.max(w64[np.isfinite(w64)], initial=1e-1))
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=atol)


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


@pytest.mark.sweep
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
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


@pytest.mark.sweep
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("chunk_size", [None, 128])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_fused_loss_with_a_symbolic_vocabulary(reduction, chunk_size, dtype):
  # the chunk choice needs no concrete V: one export serves a vocabulary of 5
  # (one short chunk) and of 1100 (more than one chunk of 1024 or of 128)
  lce = jaxsmx.linear_softmax_cross_entropy
  kw = {
    "reduction": reduction,
    "chunk_size": chunk_size,
    "label_smoothing": 0.1,
    "softcap": 3.0,
    "ignore_index": -100,
  }

  def f(x, w, c, b):
    loss = lambda x, w, b: jnp.sum(lce(x, w, c, bias=b, **kw))
    return lce(x, w, c, bias=b, **kw), jax.grad(loss, (0, 1, 2))(x, w, b)

  b, v = export.symbolic_shape("b, v")
  specs = [((b, 4), dtype), ((4, v), dtype), ((b,), "int32"), ((v,), dtype)]
  restored = _round_trip(f, [jax.ShapeDtypeStruct(s, d) for s, d in specs])
  r = np.random.default_rng(0)
  for n, vocab in [(6, 5), (3, 1100)]:
    x = r.normal(size=(n, 4)).astype(dtype)
    w = r.normal(size=(4, vocab)).astype(dtype)
    c = r.integers(0, vocab, n).astype(np.int32)
    c[1] = -100
    bias = r.normal(size=(vocab,)).astype(dtype)
    got, want = restored.call(x, w, c, bias), jax.jit(f)(x, w, c, bias)
    for g, w_ in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      assert g.dtype == w_.dtype and g.shape == w_.shape
      tol = 1e-6 if dtype == "float32" else 1e-2
      np.testing.assert_allclose(
        np.asarray(g, np.float32), np.asarray(w_, np.float32), rtol=tol, atol=tol
      )
