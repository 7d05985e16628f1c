"""Tests for poly_loss_cross_entropy (jaxsmx/_poly.py) against optax.

Values and gradients (logits, labels, epsilon) agree with optax to 1e-5 in
float32 on random inputs, with class and row masks, tuple axes and per-example
epsilon; the edges follow softmax_cross_entropy's rules.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_vjp_matches, f64
from jax.test_util import check_grads

import jaxsmx
from jaxsmx import _poly

poly = jaxsmx.poly_loss_cross_entropy
INF = np.inf
TOL = {"rtol": 1e-5, "atol": 1e-5}


def inputs(shape=(6, 5), seed=0):
  r = np.random.default_rng(seed)
  z = (r.normal(size=shape) * 3).astype(np.float32)
  y = r.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
  mask = r.random(shape) > 0.3
  mask[..., 0] = True
  return z, y, mask


def grads(f, *args, argnums=(0, 1)):
  return jax.grad(lambda *a: jnp.sum(f(*a)), argnums)(*args)


def assert_close(got, want, **tol):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(f64(g), f64(w), **(tol or TOL))


def peer(z, y, e, where=None, axis=-1):
  return optax.losses.poly_loss_cross_entropy(z, y, epsilon=e, where=where, axis=axis)


@pytest.mark.parametrize("epsilon", [2.0, -1.0, 0.0, 5.45])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_optax(epsilon, masked):
  z, y, mask = inputs()
  where = mask if masked else None
  # label mass on a masked class is dropped by jaxsmx (masking means
  # slicing); optax's CE keeps it, so the labels are zero there
  y = y * mask if masked else y
  ours = lambda z, y, e: poly(z, y, epsilon=e, where=where)
  theirs = lambda z, y, e: peer(z, y, e, where)
  e = jnp.float32(epsilon)
  assert_close(ours(z, y, e), theirs(z, y, e))
  got, want = (
    grads(ours, z, y, e, argnums=(0, 1, 2)),
    grads(theirs, z, y, e, argnums=(0, 1, 2)),
  )
  assert_close(got[0], want[0])
  assert_close(got[2], want[2])
  # labels' gradient at kept classes (optax's is -inf + ... at masked ones)
  keep = np.broadcast_to(mask if masked else True, z.shape)
  assert_close(np.where(keep, got[1], 0), np.where(keep, want[1], 0))
  if masked:
    np.testing.assert_array_equal(np.asarray(got[1])[~keep], 0.0)


def test_matches_optax_with_row_mask_axis_and_epsilon_per_example():
  z, y, _ = inputs((4, 3, 5), seed=1)
  rows = np.array([[True, False, True]] * 4)
  eps = np.linspace(-1, 2, 4 * 3).reshape(4, 3).astype(np.float32)
  ours = poly(z, y, epsilon=eps, where=rows)
  theirs = np.where(rows, peer(z, y, eps), 0.0)
  assert_close(ours, theirs)
  for axis in (0, 1):
    zm, ym = np.moveaxis(z, -1, axis), np.moveaxis(y, -1, axis)
    assert_close(poly(zm, ym, epsilon=eps, axis=axis), peer(z, y, eps))
  # a tuple axis is the same data on one flattened axis
  flat = poly(z.reshape(4, 15), y.reshape(4, 15) / 3, epsilon=2.0)
  assert_close(poly(z, y / 3, epsilon=2.0, axis=(1, 2)), flat)


def test_label_and_epsilon_broadcasting():
  z, y, _ = inputs()
  got = grads(
    lambda z, y, e: poly(z, y, epsilon=e), z, y[0], np.float32(1.5), argnums=(0, 1, 2)
  )
  want = grads(
    lambda z, y, e: peer(z, y, e), z, y[0], np.float32(1.5), argnums=(0, 1, 2)
  )
  assert [g.shape for g in got] == [(6, 5), (5,), ()]
  assert_close(got, want)


def test_vjp_matches_autodiff_in_float64_and_check_grads():
  z, y, _ = inputs(seed=2)
  with jax.enable_x64(True):
    args = (z.astype(np.float64), y.astype(np.float64), np.float64(2.0))
    f = lambda z, y, e: poly(z, y, epsilon=e)
    assert_vjp_matches(f, peer, args, rtol=1e-12, atol=1e-12)
    check_grads(f, args, order=2, modes=("rev",))


def test_hessian_matches_optax():
  z, y, _ = inputs((3, 4), seed=3)
  for f, g in [
    (lambda z: jnp.sum(poly(z, y)), lambda z: jnp.sum(peer(z, y, 2.0))),
    (lambda y: jnp.sum(poly(z, y)), lambda y: jnp.sum(peer(z, y, 2.0))),
  ]:
    x = z if f.__code__.co_varnames[0] == "z" else y
    np.testing.assert_allclose(
      jax.hessian(f)(x), jax.hessian(g)(x), rtol=1e-4, atol=1e-6
    )


def test_jit_vmap_and_strict_promotion():
  z, y, mask = inputs()
  f = lambda z, y, m: poly(z, y, where=m, epsilon=1.0)
  want = f(z, y, mask)
  assert_close(jax.jit(f)(z, y, mask), want)
  assert_close(jax.vmap(f)(z, y, mask), want)
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    zb = z.astype(jnp.bfloat16)
    assert poly(zb, y).dtype == jnp.float32  # the promoted dtype, as optax
    gs = grads(
      lambda z, y, e: poly(z, y, epsilon=e),
      zb,
      y,
      jnp.ones(6, jnp.float32),
      argnums=(0, 1, 2),
    )
    assert [g.dtype for g in gs] == [jnp.bfloat16, jnp.float32, jnp.float32]


def test_edges_minus_inf_masked_and_empty_slices():
  z = np.array([[1.0, -INF, 0.5], [-INF, -INF, -INF], [0.3, 0.1, 2.0]], np.float32)
  y = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], np.float32)
  mask = np.array([[True] * 3, [True] * 3, [False] * 3])
  loss = poly(z, y, where=mask)
  assert np.all(np.isfinite(loss))
  np.testing.assert_array_equal(loss[1:], 0.0)  # empty and fully masked
  gz, gy = grads(lambda z, y: poly(z, y, where=mask), z, y)
  assert np.all(np.isfinite(gz)) and np.all(np.isfinite(gy[0, [0, 2]]))
  np.testing.assert_array_equal(gz[1:], 0.0)
  np.testing.assert_array_equal(gy[1:], 0.0)
  # label mass on a -inf logit costs +inf, as for softmax_cross_entropy
  assert poly(z[:1], np.array([[0.5, 0.5, 0.0]], np.float32))[0] == INF


def test_epsilon_zero_is_the_cross_entropy():
  z, y, mask = inputs(seed=4)
  assert_close(
    poly(z, y, epsilon=0.0, where=mask), jaxsmx.softmax_cross_entropy(z, y, where=mask)
  )


def test_errors_say_what_arrived():
  z, y, _ = inputs()
  with pytest.raises(
    ValueError, match=r"epsilon must broadcast to the batch shape \(6,\)"
  ):
    poly(z, y, epsilon=jnp.ones(5))
  with pytest.raises(TypeError, match=r"epsilon must be a real number"):
    poly(z, y, epsilon=jnp.array(True))
  with pytest.raises(TypeError, match=r"logits must be real"):
    poly(z.astype(np.complex64), y)


def test_doctests():
  result = doctest.testmod(_poly, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
