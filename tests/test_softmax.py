"""Tests for jaxsmx._softmax: softmax, log_softmax and logsumexp."""

from __future__ import annotations

import doctest
import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import LOW_DTYPES, assert_vjp_matches, eps, f64, np_log_softmax, ulp
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import jaxsmx
import jaxsmx._softmax

NAMES = ("softmax", "log_softmax", "logsumexp")

# Ours and jax.nn's, both reducing over the last axis.
OURS = {
    "softmax": jaxsmx.softmax,
    "log_softmax": jaxsmx.log_softmax,
    "logsumexp": functools.partial(jaxsmx.logsumexp, axis=-1),
}
JAX_NN = {
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "logsumexp": functools.partial(jax.nn.logsumexp, axis=-1),
}


# Plain autodiff references: jnp ops only, differentiated by JAX itself.
def plain_log_softmax(x, where=None):
  z = x if where is None else jnp.where(where, x, -jnp.inf)
  m = jnp.max(z, -1, keepdims=True)
  out = z - m - jnp.log(jnp.sum(jnp.exp(z - m), -1, keepdims=True))
  return out if where is None else jnp.where(where, out, -jnp.inf)


def plain_softmax(x, where=None):
  z = x if where is None else jnp.where(where, x, -jnp.inf)
  e = jnp.exp(z - jnp.max(z, -1, keepdims=True))
  return e / jnp.sum(e, -1, keepdims=True)


def plain_logsumexp(x, where=None):
  z = x if where is None else jnp.where(where, x, -jnp.inf)
  m = jnp.max(z, -1)
  return m + jnp.log(jnp.sum(jnp.exp(z - m[..., None]), -1))


PLAIN = {
    "softmax": plain_softmax,
    "log_softmax": plain_log_softmax,
    "logsumexp": plain_logsumexp,
}


def jgrad(f):
  return jax.jit(jax.grad(f))


def ours_where(name, where):
  return lambda x: OURS[name](x, where=where)


def np_ref(name, x):
  """Float64 NumPy reference, over the last axis."""
  lp = np_log_softmax(x)
  if name == "softmax":
    return np.exp(lp)
  if name == "log_softmax":
    return lp
  x = f64(x)
  m = x.max(-1)
  return m + np.log(np.exp(x - m[..., None]).sum(-1))


def logits(shape=(5, 7), seed=0, scale=3.0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def row_mask(shape=(5, 7), seed=1):
  """A random mask with at least one True per row."""
  rng = np.random.default_rng(seed)
  m = rng.random(shape) < 0.6
  m[..., 0] = True
  return jnp.asarray(rng.permuted(m, axis=-1))


def weighted_sum(f, w):
  """A scalar that reaches every output of f; skips the -inf ones.

  Outputs with a class axis (softmax, log_softmax) are weighted by `w` along
  it; reduced outputs (logsumexp) all by `w[0]`, so that slicing rows or
  vmapping over them keeps each output's weight.
  """

  def h(x):
    out = f(x)
    w_ = w[: out.shape[-1]] if out.shape == x.shape else w[0]
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * w_)

  return h


# ---------------------------------------------------------------------------
# references


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_jax_nn(name, dtype, transform):
  with jax.enable_x64(dtype == "float64"):
    x = logits(dtype=dtype)
    got = transform(OURS[name])(x)
    assert got.dtype == x.dtype
    tol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, JAX_NN[name](x), rtol=tol, atol=tol)
    np.testing.assert_allclose(f64(got), np_ref(name, x), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_where_matches_jax_nn(name, transform):
  x, m = logits(), row_mask()
  got = transform(lambda x, m: OURS[name](x, where=m))(x, m)
  np.testing.assert_allclose(got, JAX_NN[name](x, where=m), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [0, -2, (0, 2), (2, 0), None])
def test_axes_match_jax_nn(axis):
  x = logits((3, 4, 5))

  @jax.jit
  def both(x):
    return [
        (ours(x, axis=axis), ref(x, axis=axis))
        for ours, ref in [
            (jaxsmx.softmax, jax.nn.softmax),
            (jaxsmx.log_softmax, jax.nn.log_softmax),
            (jaxsmx.logsumexp, jax.nn.logsumexp),
            (
                functools.partial(jaxsmx.logsumexp, keepdims=True),
                functools.partial(jax.nn.logsumexp, keepdims=True),
            ),
        ]
    ]

  for got, want in both(x):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_logsumexp_defaults_to_all_axes():
  x = logits((3, 4))
  assert jaxsmx.logsumexp(x).shape == ()
  np.testing.assert_allclose(jaxsmx.logsumexp(x), jax.nn.logsumexp(x), rtol=1e-6)
  assert jaxsmx.logsumexp(x, keepdims=True).shape == (1, 1)


def test_integers_are_promoted_like_jax_nn():
  x = jnp.array([1, 2, 3])
  for name in NAMES:
    got = OURS[name](x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, JAX_NN[name](x.astype(float)), rtol=1e-6)


def test_seed_worked_example():
  # softmax(3, 1, -3) ~ (0.8789, 0.1190, 0.0022), from exp(z_i) / sum_k exp(z_k)
  z = np.array([3.0, 1.0, -3.0])
  formula = np.exp(z) / np.exp(z).sum()
  got = jaxsmx.softmax(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(got, formula, rtol=1e-6)
  np.testing.assert_allclose(got, [0.8789, 0.1190, 0.0022], atol=6e-4)
  np.testing.assert_allclose(np.round(formula, 4), [0.8789, 0.1189, 0.0022])
  with jax.enable_x64(True):
    got64 = jaxsmx.softmax(jnp.asarray(z))
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, formula, rtol=1e-15)


# ---------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_softmax_within_one_ulp(low, transform):
  x = logits((16, 10), dtype=low)
  got = transform(jaxsmx.softmax)(x)
  assert got.dtype == x.dtype
  ref = np.exp(np_log_softmax(x))  # float64, from the same low-precision inputs
  err = np.abs(f64(got) - ref)
  assert np.all(err <= ulp(ref, low)), np.max(err / ulp(ref, low))


@pytest.mark.parametrize("low", LOW_DTYPES)
@pytest.mark.parametrize("name", ["log_softmax", "logsumexp"])
def test_low_precision_log_within_two_eps(low, name, transform):
  x = logits((16, 10), dtype=low)
  got = transform(OURS[name])(x)
  assert got.dtype == x.dtype
  ref = np_ref(name, x)
  np.testing.assert_array_less(np.abs(f64(got) - ref), 2 * eps(low) * np.abs(ref))


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_is_computed_in_float32(low):
  # The one-ulp check has teeth: jax.nn.softmax, computed in the 16-bit dtype
  # throughout, misses it on these logits; jaxsmx does not.
  x = logits((64, 10), seed=3, dtype=low)
  ref = np.exp(np_log_softmax(x))
  bad = np.abs(f64(jax.nn.softmax(x)) - ref) > ulp(ref, low)
  good = np.abs(f64(jaxsmx.softmax(x)) - ref) > ulp(ref, low)
  assert bad.any() and not good.any()


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_gradients(low):
  x = logits((4, 6), dtype=low)
  w = logits((6,), seed=5)
  for name in NAMES:
    g = jgrad(weighted_sum(OURS[name], w.astype(low)))(x)
    assert g.dtype == x.dtype
    want = jgrad(weighted_sum(JAX_NN[name], w))(x.astype(jnp.float32))
    np.testing.assert_allclose(f64(g), want, rtol=4 * eps(low), atol=4 * eps(low))


@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_float64_reference(name, x64):
  x = logits(dtype=jnp.float64, scale=10.0)
  got = OURS[name](x)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, np_ref(name, x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# the bwd rules against plain autodiff


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_bwd_matches_autodiff_float32(name, masked):
  x = logits()
  m = row_mask() if masked else None
  assert_vjp_matches(
      ours_where(name, m), lambda x: PLAIN[name](x, m), (x,), rtol=1e-6, atol=1e-6
  )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_bwd_matches_autodiff_float64(name, masked, x64):
  x = logits(dtype=jnp.float64)
  m = row_mask() if masked else None
  assert_vjp_matches(
      ours_where(name, m), lambda x: PLAIN[name](x, m), (x,), rtol=1e-12, atol=1e-12
  )


@jax.custom_vjp
def _wrong_softmax(x):
  return plain_softmax(x)


def _wrong_softmax_fwd(x):
  a = plain_softmax(x)
  return a, a


def _wrong_softmax_bwd(a, g):
  return (a * g,)  # drops the -a_i a_j term of the Jacobian


_wrong_softmax.defvjp(_wrong_softmax_fwd, _wrong_softmax_bwd)


def test_checks_catch_a_wrong_bwd():
  x = logits()
  # The same checks pass on the correct rule ...
  assert_vjp_matches(jaxsmx.softmax, plain_softmax, (x,), rtol=1e-6, atol=1e-6)
  # ... and fail on the wrong one: the vjp comparison and check_grads alike.
  with pytest.raises(AssertionError, match="cotangent of argument 0"):
    assert_vjp_matches(_wrong_softmax, plain_softmax, (x,), rtol=1e-6, atol=1e-6)
  with jax.enable_x64(True):
    x64_ = logits(dtype=jnp.float64)
    check_grads(jaxsmx.softmax, (x64_,), order=1, modes=("rev",))
    with pytest.raises(AssertionError):
      check_grads(_wrong_softmax, (x64_,), order=1, modes=("rev",))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_check_grads_second_order(name, masked, x64):
  x = logits((3, 5), dtype=jnp.float64, scale=1.0)
  m = row_mask((3, 5)) if masked else None
  f = ours_where(name, m)
  if masked and name == "log_softmax":
    f = weighted_sum(f, jnp.arange(1.0, 6.0))  # finite differences of -inf
  check_grads(f, (x,), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# transformations


W = jnp.array([0.3, -1.2, 2.0, 0.7, -0.4, 1.1, 0.5])


@pytest.mark.parametrize("name", NAMES)
def test_grad_vjp_jacrev(name):
  x = logits((7,))
  ours, ref = weighted_sum(OURS[name], W), weighted_sum(JAX_NN[name], W)
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(ref)(x), atol=1e-6)
  out, vjp = jax.vjp(OURS[name], x)
  ct = jnp.ones_like(out) * 0.5
  np.testing.assert_allclose(
      vjp(ct)[0], jax.vjp(JAX_NN[name], x)[1](ct)[0], atol=1e-6
  )
  np.testing.assert_allclose(
      jax.jacrev(OURS[name])(x), jax.jacrev(JAX_NN[name])(x), atol=1e-6
  )


@pytest.mark.parametrize("name", NAMES)
def test_hessian_and_jacrev_jacrev(name, x64):
  x = logits((6,), dtype=jnp.float64)
  ours, ref = weighted_sum(OURS[name], W), weighted_sum(JAX_NN[name], W)

  @jax.jit
  def second_derivatives(x):
    return [
        (jax.hessian(ours)(x), jax.hessian(ref)(x)),
        (jax.jacrev(jax.jacrev(ours))(x), jax.hessian(ref)(x)),
        (
            jax.jacrev(jax.jacrev(OURS[name]))(x),
            jax.jacrev(jax.jacrev(JAX_NN[name]))(x),
        ),
    ]

  for got, want in second_derivatives(x):
    np.testing.assert_allclose(got, want, atol=1e-12)
  # and eagerly, on the scalar function
  np.testing.assert_allclose(jax.hessian(ours)(x), jax.hessian(ref)(x), atol=1e-12)


def test_logsumexp_hessian_closed_form(x64):
  x = logits((6,), dtype=jnp.float64)
  a = np_log_softmax(x)
  a = np.exp(a)
  np.testing.assert_allclose(
      jax.jit(jax.hessian(jaxsmx.logsumexp))(x), np.diag(a) - np.outer(a, a), atol=1e-14
  )


@pytest.mark.parametrize("name", NAMES)
def test_jit_nested_vmap_checkpoint(name):
  x = logits((2, 3, 7))
  want = JAX_NN[name](x)
  np.testing.assert_allclose(jax.jit(OURS[name])(x), want, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.vmap(OURS[name]))(x), want, atol=1e-6)
  np.testing.assert_allclose(
      jax.jit(jax.vmap(jax.vmap(OURS[name]), in_axes=1, out_axes=1))(x),
      want,
      atol=1e-6,
  )
  ours, ref = weighted_sum(OURS[name], W), weighted_sum(JAX_NN[name], W)
  want_g = jgrad(ref)(x)
  np.testing.assert_allclose(jgrad(jax.checkpoint(ours))(x), want_g, atol=1e-6)
  batched = lambda x: jnp.sum(jax.vmap(jax.vmap(ours))(x))
  np.testing.assert_allclose(jax.jit(jax.grad(batched))(x), want_g, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_scan(name):
  x = logits((4, 7))

  def total(f, x):
    def step(c, row):
      return c + weighted_sum(f, W)(row), None

    return lax.scan(step, 0.0, x)[0]

  np.testing.assert_allclose(
      total(OURS[name], x), total(JAX_NN[name], x), rtol=1e-6
  )
  np.testing.assert_allclose(
      jgrad(functools.partial(total, OURS[name]))(x),
      jgrad(functools.partial(total, JAX_NN[name]))(x),
      atol=1e-6,
  )


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_is_refused(name):
  # custom_vjp has no forward-mode rule: the documented limit. jax.hessian
  # (forward-over-reverse) and jacrev(jacrev) are the working alternatives.
  x = logits((7,))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(OURS[name], (x,), (jnp.ones_like(x),))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jacfwd(OURS[name])(x)


# ---------------------------------------------------------------------------
# numerics


def test_huge_logits_float32():
  x = jnp.array([1e30, -1e30, 1e30, 0.0], jnp.float32)
  a = jaxsmx.softmax(x)
  np.testing.assert_array_equal(a, [0.5, 0.0, 0.5, 0.0])
  ls = jaxsmx.log_softmax(x)
  np.testing.assert_allclose(ls, [-np.log(2), -2e30, -np.log(2), -1e30], rtol=1e-6)
  np.testing.assert_allclose(jaxsmx.logsumexp(x), 1e30, rtol=1e-6)
  np.testing.assert_allclose(jaxsmx.logsumexp(-x), 1e30, rtol=1e-6)
  # gradients: finite and equal to the closed forms
  w = jnp.array([1.0, 2.0, 3.0, 4.0])
  g = jax.grad(lambda x: jnp.sum(w * jaxsmx.softmax(x)))(x)
  np.testing.assert_allclose(g, [-0.5, 0.0, 0.5, 0.0], atol=1e-6)
  np.testing.assert_allclose(jax.grad(jaxsmx.logsumexp)(x), [0.5, 0, 0.5, 0])
  g = jax.grad(lambda x: jnp.sum(w * jaxsmx.log_softmax(x)))(x)
  np.testing.assert_allclose(g, w - a * w.sum())
  for name in NAMES:
    assert np.all(np.isfinite(jax.grad(weighted_sum(OURS[name], w))(x)))


@pytest.mark.parametrize("name", NAMES)
def test_minus_inf_logit_has_probability_zero(name, transform):
  x = logits((3, 6)).at[:, 2].set(-jnp.inf).at[1, 4].set(-jnp.inf)
  finite = jnp.isfinite(x)
  got = transform(OURS[name])(x)
  np.testing.assert_allclose(got, JAX_NN[name](x), rtol=1e-6)
  if name == "softmax":
    np.testing.assert_array_equal(np.asarray(got)[~finite], 0.0)
  if name == "log_softmax":
    assert np.all(np.isneginf(np.asarray(got)[~finite]))
    assert np.all(np.isfinite(np.asarray(got)[finite]))
  # finite gradients, 0 at the -inf logits (the cotangent of a -inf
  # log-probability is left out: it is a constant)
  g = jgrad(weighted_sum(OURS[name], W))(x)
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(g)[~finite], 0.0)
  np.testing.assert_allclose(g, jgrad(weighted_sum(JAX_NN[name], W))(x), atol=1e-6)


def test_minus_inf_log_softmax_vjp_is_one_minus_a():
  # d log_softmax_i / dz_i = 1 - a_i = 1 at a -inf logit: the true derivative,
  # as jax.nn gives; a cotangent that puts weight there reaches it.
  x = jnp.array([1.0, -jnp.inf, 0.0])
  ct = jnp.array([0.0, 1.0, 0.0])
  got = jax.vjp(jaxsmx.log_softmax, x)[1](ct)[0]
  np.testing.assert_allclose(got, jax.vjp(jax.nn.log_softmax, x)[1](ct)[0])
  a = jax.nn.softmax(x)
  np.testing.assert_allclose(got, [-a[0], 1.0, -a[2]])


@pytest.mark.parametrize("empty", ["all_minus_inf", "fully_masked"])
def test_empty_slice(empty, transform):
  x = logits((3, 5))
  m = jnp.ones((3, 5), bool)
  if empty == "all_minus_inf":
    x = x.at[1].set(-jnp.inf)
  else:
    m = m.at[1].set(False)

  def all_three(x, m):
    return (
        jaxsmx.softmax(x, where=m),
        jaxsmx.log_softmax(x, where=m),
        jaxsmx.logsumexp(x, axis=-1, where=m),
    )

  a, ls, lse = transform(all_three)(x, m)
  np.testing.assert_array_equal(a[1], 0.0)
  assert np.all(np.isneginf(ls[1])) and np.isneginf(lse[1])
  # the other slices are untouched
  rows = jnp.array([0, 2])
  np.testing.assert_allclose(a[rows], jax.nn.softmax(x[rows]), rtol=1e-6)
  np.testing.assert_allclose(ls[rows], jax.nn.log_softmax(x[rows]), rtol=1e-6)
  np.testing.assert_allclose(lse[rows], jax.nn.logsumexp(x[rows], -1), rtol=1e-6)
  # gradients: 0 in the empty slice, never NaN
  @jax.jit
  def grads(x, m):
    ours = [jax.grad(weighted_sum(ours_where(name, m), W))(x) for name in NAMES]
    ref = [jax.grad(weighted_sum(JAX_NN[name], W))(x[rows]) for name in NAMES]
    return ours, ref

  for g, want in zip(*grads(x, m), strict=True):
    np.testing.assert_array_equal(g[1], 0.0)
    np.testing.assert_allclose(g[rows], want, atol=1e-6)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
@pytest.mark.parametrize("name", NAMES)
def test_nan_or_plus_inf_poisons_only_its_slice(bad, name, transform):
  x = logits((3, 5)).at[1, 3].set(bad)
  got = np.asarray(transform(OURS[name])(x))
  assert np.all(np.isnan(got[1]))
  rows = jnp.array([0, 2])
  np.testing.assert_allclose(got[[0, 2]], JAX_NN[name](x[rows]), rtol=1e-6)
  g = np.asarray(jgrad(lambda x: jnp.sum(OURS[name](x)[rows]))(x))
  want = jgrad(lambda x: jnp.sum(JAX_NN[name](x)))(x[rows])
  np.testing.assert_allclose(g[[0, 2]], want, atol=1e-6)
  # and a NaN that reaches the output makes that slice's gradient NaN
  g = np.asarray(jgrad(lambda x: jnp.sum(OURS[name](x)))(x))
  assert np.all(np.isnan(g[1]))
  np.testing.assert_allclose(g[[0, 2]], want, atol=1e-6)


def test_masked_nan_is_ignored():
  x = jnp.array([1.0, jnp.nan, 2.0, jnp.inf])
  m = jnp.array([True, False, True, False])
  np.testing.assert_allclose(
      jaxsmx.softmax(x, where=m), jax.nn.softmax(jnp.array([1.0, 0, 2.0, 0]), where=m)
  )
  np.testing.assert_allclose(
      jaxsmx.logsumexp(x, where=m), jax.nn.logsumexp(jnp.array([1.0, 2.0]))
  )
  g = jgrad(lambda x: jaxsmx.logsumexp(x, where=m))(x)
  np.testing.assert_allclose(g, [0.26894143, 0, 0.7310586, 0], rtol=1e-6)


# ---------------------------------------------------------------------------
# properties


@settings(max_examples=30, deadline=None)
@given(
    x=hnp.arrays(
        np.float64,
        st.integers(1, 8),
        elements=st.floats(-40, 40, allow_nan=False, allow_infinity=False),
    ),
    shift=st.floats(-100, 100),
)
def test_softmax_sums_to_one_and_is_shift_invariant(x, shift):
  with jax.enable_x64(True):
    a = jaxsmx.softmax(x)
    np.testing.assert_allclose(jnp.sum(a), 1.0, rtol=1e-12)
    assert np.all(a >= 0)
    np.testing.assert_allclose(jaxsmx.softmax(x + shift), a, atol=1e-12)
    np.testing.assert_allclose(
        jaxsmx.log_softmax(x + shift), jaxsmx.log_softmax(x), atol=1e-12
    )
    np.testing.assert_allclose(
        jaxsmx.logsumexp(x + shift), jaxsmx.logsumexp(x) + shift, atol=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(
    x=hnp.arrays(np.float32, (3, 6), elements=st.floats(-30, 30, width=32)),
    m=hnp.arrays(np.bool_, (3, 6)),
)
def test_masked_softmax_sums_to_one(x, m):
  a = np.asarray(jaxsmx.softmax(x, where=m))
  np.testing.assert_array_equal(a[~m], 0.0)
  sums = a.sum(-1)
  np.testing.assert_allclose(sums, np.where(m.any(-1), 1.0, 0.0), atol=1e-6)


# ---------------------------------------------------------------------------
# structure: where is slicing, axis is moveaxis


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_slicing(name):
  x, m = logits((4, 7)), row_mask((4, 7))
  got = np.asarray(OURS[name](x, where=m))
  for i in range(4):
    want = np.asarray(OURS[name](x[i][m[i]]))
    if name == "logsumexp":
      np.testing.assert_allclose(got[i], want, rtol=1e-6)
    else:
      np.testing.assert_allclose(got[i][m[i]], want, rtol=1e-6)
      np.testing.assert_array_equal(
          got[i][~m[i]], 0.0 if name == "softmax" else -np.inf
      )
  # the gradient of the masked function is the sliced gradient, 0 elsewhere
  c = logits((4, 7), seed=9)  # cotangent, sliced along with x

  def loss(x, m, c):
    out = OURS[name](x, where=m) if m is not None else OURS[name](x)
    c = c if out.shape == x.shape else c[..., 0]
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * c)

  g = jgrad(loss)(x, m, c)
  for i in range(2):
    xi, ci = x[i][m[i]], c[i][m[i]] if name != "logsumexp" else c[i]
    gi = jgrad(loss)(xi, None, ci)
    np.testing.assert_allclose(g[i][m[i]], gi, atol=1e-6)
    np.testing.assert_array_equal(g[i][~m[i]], 0.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [0, 1, -2])
def test_axis_equals_moveaxis(name, k):
  x = logits((3, 4, 5))
  f = getattr(jaxsmx, name)
  got = f(x, axis=k)
  base = f(jnp.moveaxis(x, k, -1), axis=-1)
  want = base if name == "logsumexp" else jnp.moveaxis(base, -1, k)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_tuple_axes_equal_reshape(name):
  x = logits((2, 3, 4, 5))
  f = getattr(jaxsmx, name)
  got = f(x, axis=(1, 3))
  flat = jnp.moveaxis(x, (1, 3), (2, 3)).reshape(2, 4, 15)
  base = f(flat, axis=-1)
  if name == "logsumexp":
    want = base
  else:
    want = jnp.moveaxis(base.reshape(2, 4, 3, 5), (2, 3), (1, 3))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(f(x, axis=(3, 1)), got, rtol=1e-6)


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name):
  f = getattr(jaxsmx, name)
  x = logits((4, 7))
  with pytest.raises(ValueError, match=r"axis 2 is out of range .* rank 2"):
    f(x, axis=2)
  with pytest.raises(ValueError, match=r"axis -3 is out of range"):
    f(x, axis=(0, -3))
  with pytest.raises(ValueError, match=r"names the same axis twice"):
    f(x, axis=(1, -1))
  with pytest.raises(TypeError, match=r"where must be a boolean mask; got dtype int"):
    f(x, axis=-1, where=jnp.ones((4, 7), jnp.int32))
  with pytest.raises(ValueError, match=r"broadcast to the input's shape \(4, 7\).*got \(3,\)"):
    f(x, axis=-1, where=jnp.ones(3, bool))
  with pytest.raises(TypeError, match=r"axis must be an int"):
    f(x, axis=1.0)


# ---------------------------------------------------------------------------
# docstring examples


def test_doctests():
  result = doctest.testmod(jaxsmx._softmax, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
