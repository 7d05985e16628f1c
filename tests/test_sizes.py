"""Empty and degenerate sizes: no rows (N = 0), no classes (C = 0, V = 0),
no features (H = 0), alone and together, give the documented value with
gradient 0, eagerly and under jit, in every reduction.

* An empty batch gives empty per-example results, 0 for a reduction
  (``"sum"`` and ``"mean"``), and gradient 0.
* An empty class axis or vocabulary is an empty slice, as a fully masked one
  (masking means slicing): every loss and entropy gives 0 with gradient 0 and
  no label is read; ``logsumexp`` gives ``-inf`` with gradient 0.
* No features (``H = 0``): the logits are the bias (or 0), and the fused loss
  is the integer-label CE of those logits, as dense autodiff gives it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from public_cases import CASES, C

import jaxsmx

lce = jaxsmx.linear_softmax_cross_entropy
ice = jaxsmx.softmax_cross_entropy_with_integer_labels

SIZES = {"N = 0": (0, None), "C = 0": (None, 0), "N = C = 0": (0, 0)}


def _sized(case, n, c):
  """The case's arrays with n rows (batched arrays) and c classes (every
  dimension of size C); None keeps a size."""
  out = []
  for a, batched in zip(case.args, case.batched, strict=True):
    if c is not None:
      a = a[tuple(slice(0, c) if d == C else slice(None) for d in a.shape)]
    if n is not None and batched:
      a = a[:n]
    out.append(a)
  return tuple(out)


def _expected_empty_value(name: str) -> float:
  # logsumexp of an empty slice is the log of a zero sum
  return -np.inf if name.startswith("logsumexp") else 0.0


@pytest.mark.sweep
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_empty_sizes_give_the_documented_value_with_gradient_0(case, size, jit):
  args = _sized(case, *SIZES[size])
  value = jax.jit(case.value) if jit else case.value
  grad = jax.jit(case.grad) if jit else case.grad
  out = np.asarray(value(*args))
  want = _expected_empty_value(case.name)
  if out.size:
    np.testing.assert_array_equal(out, np.full(out.shape, want, out.dtype))
  for g, a in zip(grad(*args), (args[i] for i in case.diff), strict=True):
    assert g.shape == a.shape and g.dtype == a.dtype
    np.testing.assert_array_equal(np.asarray(g), np.zeros(a.shape, a.dtype))


def test_a_wrong_empty_rule_is_caught():
  # what the test above rules out: the out-of-range NaN for an empty class
  # axis (the rule before: every label lies outside [0, 0))
  case = next(c for c in CASES if c.name == "integer_ce")
  args = _sized(case, None, 0)
  careless = np.full(case.value(*args).shape, np.nan, np.float32)
  with pytest.raises(AssertionError):
    np.testing.assert_array_equal(careless, np.zeros_like(careless))


def _fused_data(n, hidden, vocab, seed=0):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, hidden)).astype(np.float32)
  w = r.normal(size=(hidden, vocab)).astype(np.float32)
  bias = r.normal(size=(vocab,)).astype(np.float32)
  labels = (np.arange(n) % max(vocab, 1)).astype(np.int32)
  labels[1::3] = -100
  omega = r.uniform(0.5, 2.0, n).astype(np.float32)
  return x, w, bias, labels, omega


def _dense(x, w, bias, labels, omega, reduction, alpha):
  """The fused loss as dense autodiff computes it (optax's CE of x @ w + b,
  ignored labels dropped)."""
  z = x @ w + bias[None]
  keep = labels != -100
  safe = jnp.where(keep, labels, 0)
  onehot = jax.nn.one_hot(safe, z.shape[-1])
  smooth = optax.smooth_labels(onehot, alpha) if alpha else onehot
  loss = jnp.where(keep, optax.softmax_cross_entropy(z, smooth), 0.0) * omega
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  denom = jnp.sum(jnp.where(keep, omega, 0.0))
  return total / jnp.where(denom == 0, 1.0, denom)


REDUCTIONS = ["none", "sum", "mean"]


@pytest.mark.sweep
@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
  ("n", "hidden", "vocab"),
  [(0, 4, 5), (6, 0, 5), (6, 4, 0), (0, 0, 0), (0, 4, 300), (300, 0, 7), (300, 4, 0)],
  ids=lambda d: str(d),
)
def test_fused_loss_at_degenerate_sizes_as_dense_autodiff(
  n, hidden, vocab, reduction, chunk_size
):
  x, w, bias, labels, omega = _fused_data(n, hidden, vocab)
  opts = {"ignore_index": -100, "reduction": reduction, "chunk_size": chunk_size}

  def fused(x, w, b, o):
    kw = {"bias": b, "weights": o, "label_smoothing": 0.1, **opts}
    return jnp.sum(lce(x, w, labels, **kw))

  def dense(x, w, b, o):
    if vocab == 0:  # an empty vocabulary: an empty slice, 0 (no label read)
      return jnp.sum(0.0 * x) + jnp.sum(0.0 * w) + jnp.sum(0.0 * b)
    return jnp.sum(_dense(x, w, b, labels, o, reduction, 0.1))

  args = (x, w, bias, omega)
  want_value, want_grads = jax.value_and_grad(dense, (0, 1, 2, 3))(*args)
  for f in (fused, jax.jit(fused)):
    value, grads = jax.value_and_grad(f, (0, 1, 2, 3))(*args)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
    assert np.isfinite(value)
    for g, want, a in zip(grads, want_grads, args, strict=True):
      assert g.shape == a.shape
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_empty_vocabulary_is_a_fully_masked_one():
  x, w, _, labels, _ = _fused_data(6, 4, 5)
  masked = lce(x, w, labels, where=np.zeros(5, bool), ignore_index=-100)
  empty = lce(x, w[:, :0], labels, ignore_index=-100)
  np.testing.assert_array_equal(empty, masked)
  np.testing.assert_array_equal(empty, np.zeros(6, np.float32))
  # the integer-label CE of an empty class axis, alike
  np.testing.assert_array_equal(ice(np.zeros((6, 0), np.float32), labels), empty)
