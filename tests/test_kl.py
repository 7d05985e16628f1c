"""Tests for kl_divergence_with_log_targets and convex_kl_divergence
(jaxsmx/_kl.py) against optax.

Values and gradients agree with optax to 1e-5 in float32 on random inputs,
with and without masks; at zero targets and -inf log-targets, where optax
gives NaN, jaxsmx follows kl_divergence's rules.
"""

import doctest
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_vjp_matches, f64
from jax.test_util import check_grads

import jaxsmx
from jaxsmx import _kl

kl_log = jaxsmx.kl_divergence_with_log_targets
convex = jaxsmx.convex_kl_divergence
INF = np.inf
TOL = {"rtol": 1e-5, "atol": 1e-5}


def optax_convex(*args, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return optax.losses.convex_kl_divergence(*args, **kw)


PAIRS = [
  ("log_targets", kl_log, optax.losses.kl_divergence_with_log_targets),
  ("convex", convex, optax_convex),
]


def inputs(shape=(6, 5), seed=0):
  r = np.random.default_rng(seed)
  lq = np.log(r.dirichlet(np.ones(shape[-1]), size=shape[:-1])).astype(np.float32)
  t = r.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
  mask = r.random(shape) > 0.3
  return lq, t, mask


def second(name, t):
  """The second argument: log-targets, or unnormalized targets."""
  return np.log(t) if name == "log_targets" else (1.7 * t).astype(np.float32)


def grads(f, *args, argnums=(0, 1)):
  return jax.grad(lambda *a: jnp.sum(f(*a)), argnums)(*args)


def assert_close(got, want, **tol):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(f64(g), f64(w), **(tol or TOL))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name,ours,peer", PAIRS, ids=[p[0] for p in PAIRS])
def test_matches_optax(name, ours, peer, masked):
  lq, t, mask = inputs()
  b = second(name, t)
  where = mask if masked else None
  f = lambda a, b: ours(a, b, where=where)
  g = lambda a, b: peer(a, b, where=where)
  assert_close(f(lq, b), g(lq, b))
  assert_close(grads(f, lq, b), grads(g, lq, b))


@pytest.mark.parametrize("name,ours,peer", PAIRS, ids=[p[0] for p in PAIRS])
def test_axis_broadcasting_and_tuple_axes(name, ours, peer):
  lq, t, _ = inputs((4, 3, 5), seed=1)
  b = second(name, t)
  for axis in (0, 1, -1):
    assert_close(ours(lq, b, axis=axis), peer(lq, b, axis=axis))
  assert_close(ours(lq, b[0, 0]), peer(lq, b[0, 0]))  # one target for all
  got = grads(lambda a, b: ours(a, b), lq, b[0, 0])
  assert got[1].shape == (5,)
  assert_close(got, grads(lambda a, b: peer(a, b), lq, b[0, 0]))
  flat = ours(lq.reshape(4, 15), b.reshape(4, 15))
  assert_close(ours(lq, b, axis=(1, 2)), flat)


@pytest.mark.parametrize("name,ours,peer", PAIRS, ids=[p[0] for p in PAIRS])
def test_vjp_check_grads_and_hessian(name, ours, peer):
  lq, t, _ = inputs((3, 4), seed=2)
  b = second(name, t)
  with jax.enable_x64(True):
    args = (lq.astype(np.float64), b.astype(np.float64))
    assert_vjp_matches(ours, peer, args, rtol=1e-12, atol=1e-12)
    check_grads(ours, args, order=2, modes=("rev",), eps=1e-6)
  for argnum in (0, 1):
    f = lambda x: jnp.sum(ours(*((x, b) if argnum == 0 else (lq, x))))  # noqa: B023
    g = lambda x: jnp.sum(peer(*((x, b) if argnum == 0 else (lq, x))))  # noqa: B023
    x = (lq, b)[argnum]
    np.testing.assert_allclose(
      jax.hessian(f)(x), jax.hessian(g)(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name,ours,peer", PAIRS, ids=[p[0] for p in PAIRS])
def test_jit_vmap_strict_promotion_and_dtypes(name, ours, peer):
  lq, t, mask = inputs()
  b = second(name, t)
  f = lambda a, b, m: ours(a, b, where=m)
  want = f(lq, b, mask)
  assert_close(jax.jit(f)(lq, b, mask), want)
  assert_close(jax.vmap(f)(lq, b, mask), want)
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    lb, bb = lq.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    assert ours(lb, bb).dtype == jnp.bfloat16
    gs = grads(lambda a, b: ours(a, b).astype(jnp.float32), lb, bb)
    assert [x.dtype for x in gs] == [jnp.bfloat16, jnp.bfloat16]


def test_log_targets_minus_inf_is_a_zero_target():
  lq = np.array([[-INF, 0.0, -1.0, -2.0]], np.float32)
  lt = np.array([[-INF, -INF, 0.0, -200.0]], np.float32)  # e^-200 underflows
  loss = kl_log(lq, lt)
  np.testing.assert_allclose(loss, [1.0], rtol=1e-6)
  assert np.isnan(optax.losses.kl_divergence_with_log_targets(lq, lt)[0])
  gq, gt = grads(kl_log, lq, lt)
  np.testing.assert_array_equal(gq, [[0.0, 0.0, -1.0, 0.0]])
  # the limit 0, or +inf where also log q = -inf (the one-sided derivative)
  np.testing.assert_array_equal(gt, [[INF, 0.0, 2.0, 0.0]])
  # it agrees with kl_divergence of the targets
  assert_close(loss, jaxsmx.kl_divergence(lq, np.exp(lt)))
  # positive mass where log q = -inf costs +inf
  assert kl_log(lq[:, :3], np.log(np.array([[0.5, 0.25, 0.25]], np.float32)))[0] == INF
  # a NaN log-prediction still makes the slice NaN
  assert np.isnan(kl_log(np.array([np.nan, 0.0]), np.array([-INF, 0.0])))


def test_convex_zero_targets_follow_kl_divergence():
  lq = np.array([[-INF, 0.0, np.log(0.5)]], np.float32)
  t = np.array([[0.0, 0.0, 1.0]], np.float32)
  loss = convex(lq, t)
  np.testing.assert_allclose(loss, [1.0 + np.log(2.0) - 0.5], rtol=1e-6)
  assert np.isnan(optax_convex(lq, t)[0])
  gq, gt = grads(convex, lq, t)
  np.testing.assert_allclose(gq, [[0.0, 1.0, -0.5]], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(gt)[0, :2], [INF, -INF])
  assert_close(np.asarray(gt)[0, 2], np.log(2.0))


@pytest.mark.parametrize("name,ours,peer", PAIRS, ids=[p[0] for p in PAIRS])
def test_fully_masked_slices_give_zero(name, ours, peer):
  lq, t, _ = inputs(seed=3)
  b = second(name, t)
  mask = np.ones_like(lq, bool)
  mask[2] = False
  np.testing.assert_array_equal(ours(lq, b, where=mask)[2], 0.0)
  ga, gb = grads(lambda a, b: ours(a, b, where=mask), lq, b)
  np.testing.assert_array_equal(ga[2], 0.0)
  np.testing.assert_array_equal(gb[2], 0.0)


def test_convex_is_kl_for_distributions_and_zero_at_equality():
  lq, t, _ = inputs(seed=4)
  assert_close(convex(lq, t), jaxsmx.kl_divergence(lq, t))
  np.testing.assert_allclose(convex(np.log(1.7 * t), 1.7 * t), 0.0, atol=1e-6)


def test_errors_say_what_arrived():
  with pytest.raises(TypeError, match=r"log_targets must be real"):
    kl_log(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.complex64))
  with pytest.raises(ValueError, match=r"must broadcast"):
    convex(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))


def test_doctests():
  result = doctest.testmod(_kl, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
