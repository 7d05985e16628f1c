"""Tests for jaxsmx._softmax: softmax, log_softmax and logsumexp.

Inputs are built and outputs inspected with NumPy, and the transformations
under test are compiled once per test where possible: on CPU the suite's time
is almost all XLA compilation.
"""

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


def logits(shape=(5, 7), seed=0, scale=3.0, dtype=np.float32) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(dtype)


def row_mask(shape=(5, 7), seed=1) -> np.ndarray:
  """A random mask with at least one True per row."""
  rng = np.random.default_rng(seed)
  m = rng.random(shape) < 0.6
  m[..., 0] = True
  return rng.permuted(m, axis=-1)


def ours_where(name, where):
  return lambda x: OURS[name](x, where=where)


W = jnp.array([0.3, -1.2, 2.0, 0.7, -0.4, 1.1, 0.5])


def weighted_sum(f, w=W):
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


def jgrad(f):
  return jax.jit(jax.grad(f))


# ---------------------------------------------------------------------------
# references


@pytest.mark.sweep
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_jax_nn_and_float64_numpy(name, dtype, transform):
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
  x = np.array([1, 2, 3], np.int32)
  for name in NAMES:
    got = OURS[name](x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np_ref(name, x), rtol=1e-6)


def test_seed_worked_example():
  # softmax(3, 1, -3) ~ (0.8789, 0.1190, 0.0022), from exp(z_i) / sum_k exp(z_k)
  z = np.array([3.0, 1.0, -3.0])
  formula = np.exp(z) / np.exp(z).sum()
  got = jaxsmx.softmax(z.astype(np.float32))
  np.testing.assert_allclose(got, formula, rtol=1e-6)
  np.testing.assert_allclose(got, [0.8789, 0.1190, 0.0022], atol=6e-4)
  np.testing.assert_allclose(np.round(formula, 4), [0.8789, 0.1189, 0.0022])
  with jax.enable_x64(True):
    got64 = jaxsmx.softmax(z)
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, formula, rtol=1e-15)


# ---------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_softmax_within_one_ulp(low, transform):
  x = logits((16, 10), dtype=jnp.dtype(low))
  got = transform(jaxsmx.softmax)(x)
  assert got.dtype == x.dtype
  ref = np.exp(np_log_softmax(x))  # float64, from the same low-precision inputs
  err = np.abs(f64(got) - ref)
  assert np.all(err <= ulp(ref, low)), np.max(err / ulp(ref, low))


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_log_softmax_logsumexp_within_two_eps(low, transform):
  x = logits((16, 10), dtype=jnp.dtype(low))
  for name in ("log_softmax", "logsumexp"):
    got = transform(OURS[name])(x)
    assert got.dtype == x.dtype
    ref = np_ref(name, x)
    np.testing.assert_array_less(np.abs(f64(got) - ref), 2 * eps(low) * np.abs(ref))


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_the_ulp_check_catches_low_precision_arithmetic(low):
  # jax.nn.softmax computes in the 16-bit dtype throughout and misses the
  # one-ulp bound on these logits; jaxsmx, computing in float32, does not.
  x = logits((64, 10), seed=3, dtype=jnp.dtype(low))
  ref = np.exp(np_log_softmax(x))
  bad = np.abs(f64(jax.nn.softmax(x)) - ref) > ulp(ref, low)
  good = np.abs(f64(jaxsmx.softmax(x)) - ref) > ulp(ref, low)
  assert bad.any() and not good.any()


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_gradients(low):
  x = logits((4, 6), dtype=jnp.dtype(low))

  @jax.jit
  def grads(x, x32):
    ours = [jax.grad(weighted_sum(OURS[n], W.astype(low)))(x) for n in NAMES]
    ref = [jax.grad(weighted_sum(JAX_NN[n]))(x32) for n in NAMES]
    return ours, ref

  for g, want in zip(*grads(x, x.astype(np.float32)), strict=True):
    assert g.dtype == x.dtype
    np.testing.assert_allclose(f64(g), want, rtol=4 * eps(low), atol=4 * eps(low))


# ---------------------------------------------------------------------------
# the bwd rules against plain autodiff


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bwd_matches_autodiff(name, dtype):
  tol = 1e-12 if dtype == "float64" else 1e-6
  with jax.enable_x64(dtype == "float64"):
    x = logits(dtype=dtype)
    for m in (None, row_mask()):
      assert_vjp_matches(
        ours_where(name, m),
        lambda x, m=m: PLAIN[name](x, m),
        (x,),
        rtol=tol,
        atol=tol,
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
    x64_ = logits((2, 4), dtype=np.float64)
    check_grads(jaxsmx.softmax, (x64_,), order=1, modes=("rev",))
    with pytest.raises(AssertionError):
      check_grads(_wrong_softmax, (x64_,), order=1, modes=("rev",))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_check_grads_second_order(name, masked, x64):
  x = logits((3, 5), dtype=np.float64, scale=1.0)
  m = row_mask((3, 5)) if masked else None
  f = ours_where(name, m)
  if masked and name == "log_softmax":
    f = weighted_sum(f)  # no finite differences of -inf
  check_grads(jax.jit(f), (x,), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# transformations


@pytest.mark.parametrize("name", NAMES)
def test_grad_vjp_jacrev(name):
  x = logits((7,))
  ct = np.linspace(-1.0, 1.0, 7, dtype=np.float32)[: 7 if name != "logsumexp" else 1]
  ct = ct.reshape(jax.eval_shape(OURS[name], x).shape)

  @jax.jit
  def all_three(x):
    return [
      (jax.grad(weighted_sum(f))(x), jax.vjp(f, x)[1](ct)[0], jax.jacrev(f)(x))
      for f in (OURS[name], JAX_NN[name])
    ]

  ours, ref = all_three(x)
  for got, want in zip(ours, ref, strict=True):
    np.testing.assert_allclose(got, want, atol=1e-6)
  # and once eagerly
  np.testing.assert_allclose(jax.grad(weighted_sum(OURS[name]))(x), ref[0], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_and_jacrev_jacrev(name, x64):
  x = logits((6,), dtype=np.float64)
  ours, ref = weighted_sum(OURS[name]), weighted_sum(JAX_NN[name])

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


def test_logsumexp_hessian_closed_form(x64):
  x = logits((6,), dtype=np.float64)
  a = np.exp(np_log_softmax(x))
  np.testing.assert_allclose(
    jax.jit(jax.hessian(jaxsmx.logsumexp))(x),
    np.diag(a) - np.outer(a, a),
    atol=1e-14,
  )


@pytest.mark.parametrize("name", NAMES)
def test_jit_nested_vmap_checkpoint_scan(name):
  x = logits((2, 3, 7))
  ours, ref = weighted_sum(OURS[name]), weighted_sum(JAX_NN[name])

  def scanned(f, x):
    step = lambda c, row: (c + f(row), None)
    return lax.scan(step, 0.0, x.reshape(-1, 7))[0]

  @jax.jit
  def everything(x):
    return {
      "vmap2": jax.vmap(jax.vmap(OURS[name]))(x),
      "vmap2_axes": jax.vmap(jax.vmap(OURS[name]), in_axes=1, out_axes=1)(x),
      "grad_checkpoint": jax.grad(jax.checkpoint(ours))(x),
      "grad_vmap2": jax.grad(lambda x: jnp.sum(jax.vmap(jax.vmap(ours))(x)))(x),
      "scan": scanned(ours, x),
      "grad_scan": jax.grad(functools.partial(scanned, ours))(x),
    }

  got = everything(x)
  want = JAX_NN[name](x)
  want_g = jgrad(ref)(x)
  np.testing.assert_allclose(got["vmap2"], want, atol=1e-6)
  np.testing.assert_allclose(got["vmap2_axes"], want, atol=1e-6)
  np.testing.assert_allclose(got["scan"], ref(x), rtol=1e-6)
  for k in ("grad_checkpoint", "grad_vmap2", "grad_scan"):
    np.testing.assert_allclose(got[k], want_g, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_is_refused(name):
  # custom_vjp has no forward-mode rule: the documented limit. jax.hessian
  # (forward-over-reverse) and jacrev(jacrev) are the working alternatives.
  x = logits((7,))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(OURS[name], (x,), (np.ones_like(x),))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jacfwd(OURS[name])(x)


# ---------------------------------------------------------------------------
# numerics


def test_huge_logits_float32():
  x = np.array([1e30, -1e30, 1e30, 0.0], np.float32)
  np.testing.assert_array_equal(jaxsmx.softmax(x), [0.5, 0.0, 0.5, 0.0])
  np.testing.assert_allclose(
    jaxsmx.log_softmax(x), [-np.log(2), -2e30, -np.log(2), -1e30], rtol=1e-6
  )
  np.testing.assert_allclose(jaxsmx.logsumexp(x), 1e30, rtol=1e-6)
  np.testing.assert_allclose(jaxsmx.logsumexp(-x), 1e30, rtol=1e-6)
  # gradients: finite and equal to the closed forms
  w = jnp.array([1.0, 2.0, 3.0, 4.0])
  a = np.array([0.5, 0.0, 0.5, 0.0])
  g = jax.jit(lambda x: [jax.grad(weighted_sum(OURS[n], w))(x) for n in NAMES])(x)
  np.testing.assert_allclose(g[0], a * (w - np.dot(a, w)), atol=1e-6)
  np.testing.assert_allclose(g[1], w - a * np.sum(w), atol=1e-6)
  np.testing.assert_allclose(g[2], w[0] * a, atol=1e-6)
  # a slice with a finite spread next to huge values keeps its exact values
  base = logits((4,))
  for shift in (1e30, -1e30):
    x = np.stack([base, base.astype(np.float64) + shift]).astype(np.float32)
    for name in NAMES:
      np.testing.assert_allclose(OURS[name](x)[0], np_ref(name, base), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_minus_inf_logit_has_probability_zero(name, transform):
  x = logits((3, 6))
  x[:, 2] = x[1, 4] = -np.inf
  finite = np.isfinite(x)
  got = np.asarray(transform(OURS[name])(x))
  np.testing.assert_allclose(got, JAX_NN[name](x), rtol=1e-6)
  if name == "softmax":
    np.testing.assert_array_equal(got[~finite], 0.0)
  if name == "log_softmax":
    assert np.all(np.isneginf(got[~finite])) and np.all(np.isfinite(got[finite]))


def test_minus_inf_logit_gradients():
  # finite gradients, 0 at the -inf logits (the cotangent of a -inf
  # log-probability is left out: it is a constant); as jax.nn
  x = logits((3, 7))
  x[:, 2] = x[1, 4] = -np.inf
  finite = np.isfinite(x)

  @jax.jit
  def grads(x):
    return [
      (jax.grad(weighted_sum(OURS[n]))(x), jax.grad(weighted_sum(JAX_NN[n]))(x))
      for n in NAMES
    ]

  for g, want in grads(x):
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g)[~finite], 0.0)
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_minus_inf_log_softmax_vjp_is_one_minus_a():
  # d log_softmax_i / dz_i = 1 - a_i = 1 at a -inf logit: the true derivative,
  # as jax.nn gives; a cotangent that puts weight there reaches it.
  x = np.array([1.0, -np.inf, 0.0], np.float32)
  ct = np.array([0.0, 1.0, 0.0], np.float32)
  got = jax.vjp(jaxsmx.log_softmax, x)[1](ct)[0]
  np.testing.assert_allclose(got, jax.vjp(jax.nn.log_softmax, x)[1](ct)[0])
  a = np.exp(np_log_softmax(x))
  np.testing.assert_allclose(got, [-a[0], 1.0, -a[2]], rtol=1e-6)


def _empty_row(kind):
  """Logits and mask whose row 1 is empty: all -inf, or fully masked."""
  x, m = logits((3, 7)), np.ones((3, 7), bool)
  if kind == "all_minus_inf":
    x[1] = -np.inf
  else:
    m[1] = False
  return x, m


@pytest.mark.parametrize("kind", ["all_minus_inf", "fully_masked"])
def test_empty_slice(kind, transform):
  x, m = _empty_row(kind)

  def all_three(x, m):
    return [OURS[n](x, where=m) for n in NAMES]

  a, ls, lse = (np.asarray(v) for v in transform(all_three)(x, m))
  np.testing.assert_array_equal(a[1], 0.0)
  assert np.all(np.isneginf(ls[1])) and np.isneginf(lse[1])
  # the other slices are untouched
  for name, got in zip(NAMES, (a, ls, lse), strict=True):
    np.testing.assert_allclose(got[[0, 2]], np_ref(name, x[[0, 2]]), rtol=1e-6)


@pytest.mark.parametrize("kind", ["all_minus_inf", "fully_masked"])
def test_empty_slice_gradients(kind):
  # gradient 0 in the empty slice, never NaN, the others as jax.nn's
  x, m = _empty_row(kind)

  @jax.jit
  def grads(x):
    ours = [jax.grad(weighted_sum(ours_where(n, m)))(x) for n in NAMES]
    ref = [jax.grad(weighted_sum(JAX_NN[n]))(x[jnp.array([0, 2])]) for n in NAMES]
    return ours, ref

  for g, want in zip(*grads(x), strict=True):
    np.testing.assert_array_equal(g[1], 0.0)
    np.testing.assert_allclose(g[np.array([0, 2])], want, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "plus_inf"])
def test_nan_or_plus_inf_poisons_only_its_slice(bad, transform):
  x = logits((3, 7))
  x[1, 3] = bad
  got = transform(lambda x: [OURS[n](x) for n in NAMES])(x)
  for name, v in zip(NAMES, got, strict=True):
    v = np.asarray(v)
    if name == "logsumexp" and bad == np.inf:
      assert v[1] == np.inf  # as jax.nn, scipy and torch: the sum is +inf
    else:
      assert np.all(np.isnan(v[1])), name
    np.testing.assert_allclose(v[[0, 2]], np_ref(name, x[[0, 2]]), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "plus_inf"])
def test_nan_or_plus_inf_gradients_stay_in_their_slice(bad):
  x = logits((3, 7))
  x[1, 3] = bad
  rows = np.array([0, 2])

  @jax.jit
  def grads(x):
    return [
      (
        jax.grad(lambda x, n=n: jnp.sum(OURS[n](x)[rows]))(x),
        jax.grad(lambda x, n=n: jnp.sum(OURS[n](x)))(x),
        jax.grad(lambda x, n=n: jnp.sum(JAX_NN[n](x)))(x[rows]),
      )
      for n in NAMES
    ]

  for name, (unused, used, want) in zip(NAMES, grads(x), strict=True):
    np.testing.assert_allclose(unused[rows], want, atol=1e-6)
    np.testing.assert_allclose(used[rows], want, atol=1e-6)
    if name == "logsumexp" and bad == np.inf:
      # +inf: the limit of the softmax weights, 1 at the +inf entry
      np.testing.assert_array_equal(used[1], np.arange(7) == 3)
    else:
      # a NaN that reaches the output makes that slice's gradient NaN
      assert np.all(np.isnan(used[1])), name


def test_zero_size_class_axis_is_an_empty_slice():
  # as jax.nn: no classes at all is a slice without mass
  x = np.zeros((3, 0), np.float32)
  for name in NAMES:
    got, want = OURS[name](x), JAX_NN[name](x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  assert np.all(np.isneginf(jaxsmx.logsumexp(x, axis=-1)))
  g = jgrad(lambda x: jnp.sum(jaxsmx.logsumexp(x, axis=-1)))(x)
  assert g.shape == (3, 0)


def test_masked_nan_is_ignored():
  x = np.array([1.0, np.nan, 2.0, np.inf], np.float32)
  m = np.array([True, False, True, False])
  a = np.asarray(jaxsmx.softmax(x, where=m))
  np.testing.assert_allclose(a[m], np_ref("softmax", x[m]), rtol=1e-6)
  np.testing.assert_array_equal(a[~m], 0.0)
  np.testing.assert_allclose(
    jaxsmx.logsumexp(x, where=m), np_ref("logsumexp", x[m]), rtol=1e-6
  )
  g = np.asarray(jgrad(lambda x: jaxsmx.logsumexp(x, where=m))(x))
  np.testing.assert_allclose(g[m], np_ref("softmax", x[m]), rtol=1e-6)
  np.testing.assert_array_equal(g[~m], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_second_order_at_the_edges(name, x64):
  # Second derivatives at -inf logits, empty slices and masked entries are
  # those of the slice without them (0 in the removed rows and columns),
  # never NaN: reverse-over-reverse (jacrev(jacrev)) and jax.hessian alike.
  x = logits((3, 5), dtype=np.float64)
  m = np.ones((3, 5), bool)
  x[0, 1] = -np.inf  # one -inf logit
  x[1] = -np.inf  # an all -inf row
  m[2, 3] = False  # a masked entry
  w = jnp.arange(1.0, 6.0)
  f = weighted_sum(ours_where(name, m), w)

  @jax.jit
  def second(x):
    return jax.jacrev(jax.jacrev(f))(x), jax.hessian(f)(x)

  rr, fr = (np.asarray(h).reshape(15, 15) for h in second(x))
  assert not np.any(np.isnan(rr)) and not np.any(np.isnan(fr))
  np.testing.assert_allclose(rr, fr, atol=1e-12)
  # rows 0 and 2 against the plain float64 Hessian of the surviving entries
  for row, keep in ((0, [0, 2, 3, 4]), (2, [0, 1, 2, 4])):
    idx = [5 * row + k for k in keep]
    wk = w[np.array(keep)]
    h = jax.jit(jax.hessian(weighted_sum(PLAIN[name], wk)))(x[row, keep])
    np.testing.assert_allclose(rr[np.ix_(idx, idx)], h, atol=1e-12)
    rest = np.setdiff1d(np.arange(15), idx)
    np.testing.assert_array_equal(rr[np.ix_(idx, rest)], 0.0)
  np.testing.assert_array_equal(rr[5:10], 0.0)


# ---------------------------------------------------------------------------
# properties


@functools.partial(jax.jit, static_argnums=())
def _shift_checks(x, shift):
  return (
    jaxsmx.softmax(x),
    jaxsmx.softmax(x + shift),
    jaxsmx.log_softmax(x),
    jaxsmx.log_softmax(x + shift),
    jaxsmx.logsumexp(x),
    jaxsmx.logsumexp(x + shift),
  )


@settings(max_examples=30, deadline=None)
@given(
  x=hnp.arrays(
    np.float64,
    st.sampled_from([1, 3, 8]),
    elements=st.floats(-40, 40, allow_nan=False, allow_infinity=False),
  ),
  shift=st.floats(-100, 100),
)
def test_softmax_sums_to_one_and_is_shift_invariant(x, shift):
  with jax.enable_x64(True):
    a, a_s, ls, ls_s, lse, lse_s = _shift_checks(x, shift)
    np.testing.assert_allclose(np.sum(a), 1.0, rtol=1e-12)
    assert np.all(np.asarray(a) >= 0)
    np.testing.assert_allclose(a_s, a, atol=1e-12)
    np.testing.assert_allclose(ls_s, ls, atol=1e-12)
    np.testing.assert_allclose(lse_s, lse + shift, atol=1e-12)


_masked_softmax = jax.jit(lambda x, m: jaxsmx.softmax(x, where=m))


@settings(max_examples=30, deadline=None)
@given(
  x=hnp.arrays(np.float32, (3, 6), elements=st.floats(-30, 30, width=32)),
  m=hnp.arrays(np.bool_, (3, 6)),
)
def test_masked_softmax_sums_to_one(x, m):
  a = np.asarray(_masked_softmax(x, m))
  np.testing.assert_array_equal(a[~m], 0.0)
  np.testing.assert_allclose(a.sum(-1), np.where(m.any(-1), 1.0, 0.0), atol=1e-6)


# ---------------------------------------------------------------------------
# structure: where is slicing, axis is moveaxis


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_slicing(name):
  x, m = logits((4, 7)), row_mask((4, 7))
  c = logits((4, 7), seed=9)  # a cotangent, sliced along with x
  got = np.asarray(OURS[name](x, where=m))

  def loss(x, m, c):
    out = OURS[name](x, where=m)
    c = c if out.shape == x.shape else c[..., 0]
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * c)

  g = jgrad(loss)(x, m, c)
  for i in range(2):
    xi, mi = x[i][m[i]], m[i]
    if name == "logsumexp":
      np.testing.assert_allclose(got[i], np_ref(name, xi), rtol=1e-6)
      ci = c[i]
    else:
      np.testing.assert_allclose(got[i][mi], np_ref(name, xi), rtol=1e-6)
      np.testing.assert_array_equal(got[i][~mi], 0.0 if name == "softmax" else -np.inf)
      ci = c[i][mi]
    # the gradient of the masked function is the sliced gradient, 0 elsewhere
    gi = jgrad(loss)(xi, None, ci)
    np.testing.assert_allclose(g[i][mi], gi, atol=1e-6)
    np.testing.assert_array_equal(g[i][~mi], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_axis_equals_moveaxis(name):
  x = logits((3, 4, 5))
  f = getattr(jaxsmx, name)
  for k in (0, 1, -2):
    got = f(x, axis=k)
    base = np.asarray(f(np.moveaxis(x, k, -1), axis=-1))
    want = base if name == "logsumexp" else np.moveaxis(base, -1, k)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_tuple_axes_equal_reshape(name):
  x = logits((2, 3, 4, 5))
  f = getattr(jaxsmx, name)
  got = f(x, axis=(1, 3))
  flat = np.moveaxis(x, (1, 3), (2, 3)).reshape(2, 4, 15)
  base = np.asarray(f(flat, axis=-1))
  if name == "logsumexp":
    want = base
  else:
    want = np.moveaxis(base.reshape(2, 4, 3, 5), (2, 3), (1, 3))
  # to the last bit, in value and gradient, as optax's test_axes asks
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(f(x, axis=(3, 1)), got, rtol=1e-6)
  w = np.random.default_rng(0).standard_normal(got.shape).astype(np.float32)
  g = jgrad(lambda x: jnp.sum(f(x, axis=(1, 3)) * w))(x)
  wf = w if name == "logsumexp" else np.moveaxis(w, (1, 3), (2, 3)).reshape(2, 4, 15)
  gf = np.asarray(jgrad(lambda x: jnp.sum(f(x, axis=-1) * wf))(flat))
  np.testing.assert_array_equal(g, np.moveaxis(gf.reshape(2, 4, 3, 5), (2, 3), (1, 3)))


@pytest.mark.parametrize("name", ("softmax", "log_softmax"))
def test_where_may_broadcast_the_logits_up_as_in_jax_nn(name):
  x = logits((7,))
  m = np.stack([row_mask((7,), seed=s) for s in range(3)])
  got = getattr(jaxsmx, name)(x, where=m)
  # jax.nn takes such a mask too, but its masked max then reduces the wrong
  # data (jax 0.10.2 gives uniform probabilities); the reference is jax.nn on
  # the logits broadcast explicitly
  want = getattr(jax.nn, name)(np.broadcast_to(x, m.shape), where=m)
  assert got.shape == want.shape == (3, 7)
  np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------------------
# logsumexp: jax.nn's full signature (b, return_sign, where, axis=())

LSE_CASES = {
  # name: (a shape, b shape or None, kwargs)
  "all axes": ((3, 4, 5), None, {}),
  "axis=-1": ((3, 4, 5), None, {"axis": -1}),
  "tuple axis": ((3, 4, 5), None, {"axis": (2, 0)}),
  "axis=()": ((3, 4), None, {"axis": ()}),
  "b same shape": ((3, 4, 5), (3, 4, 5), {"axis": -1}),
  "b broadcast": ((3, 4, 5), (5,), {"axis": (0, 2)}),
  "b of higher rank": ((4, 5), (3, 4, 5), {"axis": -1}),
  "b keepdims": ((3, 4, 5), (4, 1), {"axis": 1, "keepdims": True}),
  "b axis=()": ((3, 4), (3, 4), {"axis": ()}),
  "b all axes": ((3, 4), (3, 4), {}),
}


def lse_args(a_shape, b_shape, *, signed=False, seed=0):
  rng = np.random.default_rng(seed)
  a = (2.0 * rng.standard_normal(a_shape)).astype(np.float32)
  if b_shape is None:
    return a, None
  b = rng.uniform(0.2, 2.0, b_shape).astype(np.float32)
  if signed:
    b = b * np.where(rng.random(b_shape) < 0.3, -1.0, 1.0).astype(np.float32)
  return a, b


@pytest.mark.sweep
@pytest.mark.parametrize("case", list(LSE_CASES))
@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_matches_jax_nn_and_scipy(case, return_sign):
  import scipy.special

  a_shape, b_shape, kw = LSE_CASES[case]
  a, b = lse_args(a_shape, b_shape, signed=return_sign)
  kw = dict(kw, b=b, return_sign=return_sign)
  got, want = jaxsmx.logsumexp(a, **kw), jax.nn.logsumexp(a, **kw)
  ref = scipy.special.logsumexp(f64(a), **dict(kw, b=None if b is None else f64(b)))
  if not return_sign:
    got, want, ref = (got, None), (want, None), (ref, None)
  assert got[0].shape == want[0].shape == np.shape(ref[0])
  assert got[0].dtype == want[0].dtype
  np.testing.assert_allclose(got[0], want[0], rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(got[0], ref[0], rtol=2e-6, atol=2e-6)
  if return_sign:
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[1], ref[1])
    assert got[1].dtype == want[1].dtype


@pytest.mark.parametrize("case", list(LSE_CASES))
def test_logsumexp_gradients_match_autodiff_of_jax_nn(case):
  a_shape, b_shape, kw = LSE_CASES[case]
  a, b = lse_args(a_shape, b_shape, seed=3)
  if b is None:
    f = functools.partial(jaxsmx.logsumexp, **kw)
    ref = functools.partial(jax.nn.logsumexp, **kw)
    assert_vjp_matches(f, ref, (a,), rtol=2e-6, atol=2e-6)
  else:
    f = lambda a, b: jaxsmx.logsumexp(a, b=b, **kw)
    ref = lambda a, b: jax.nn.logsumexp(a, b=b, **kw)
    assert_vjp_matches(f, ref, (a, b), rtol=2e-6, atol=2e-6)


def test_logsumexp_signed_b_gradients_match_autodiff_of_jax_nn():
  # return_sign with sums of both signs: the value's gradient is sign-aware
  a, b = lse_args((6, 5), (6, 5), signed=True, seed=4)

  def f(lse):
    return lambda a, b: lse(a, axis=-1, b=b, return_sign=True)[0]

  assert_vjp_matches(f(jaxsmx.logsumexp), f(jax.nn.logsumexp), (a, b), rtol=1e-5)
  _, sign = jax.nn.logsumexp(a, axis=-1, b=b, return_sign=True)
  assert set(np.asarray(sign).tolist()) == {-1.0, 1.0}  # both signs tested


def test_logsumexp_where_matches_jax_nn():
  a, b = lse_args((4, 6), (4, 6), seed=5)
  m = row_mask((4, 6))

  def value_and_grad(lse, kw):
    return jax.value_and_grad(lambda a: lse(a, where=m, **kw).sum())(a)

  for kw in ({}, {"b": b}, {"b": b, "axis": 0}, {"axis": ()}):
    got, want = (
      value_and_grad(jaxsmx.logsumexp, kw),
      value_and_grad(jax.nn.logsumexp, kw),
    )
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)
  # a mask of higher rank broadcasts a up, as in jax.nn
  m3 = np.stack([m, ~m | (np.arange(6) == 0)])
  np.testing.assert_allclose(
    jaxsmx.logsumexp(a, axis=-1, where=m3),
    jax.nn.logsumexp(a, axis=-1, where=m3),
    rtol=1e-6,
  )


def test_logsumexp_b_zero_leaves_the_entry_out():
  a = np.array([[0.5, np.inf, 2.0], [0.5, np.nan, 2.0], [0.5, 1.0, 2.0]], np.float32)
  b = np.array([1.0, 0.0, 2.0], np.float32)
  want = np.log(np.exp(0.5) + 2.0 * np.exp(2.0))
  np.testing.assert_allclose(jaxsmx.logsumexp(a, axis=-1, b=b), want, rtol=1e-6)
  np.testing.assert_allclose(jax.nn.logsumexp(a, axis=-1, b=b), want, rtol=1e-6)
  # d/da is 0 at b = 0; d/db is the true partial derivative exp(a - lse)
  # (jax.nn gives 0 there, as its where cuts the path)
  da, db = jax.jit(jax.grad(lambda a, b: jaxsmx.logsumexp(a[2], b=b), (0, 1)))(a, b)
  lse = np.log(np.exp(0.5) + 2.0 * np.exp(2.0))
  np.testing.assert_allclose(
    da[2], [np.exp(0.5 - lse), 0.0, 2 * np.exp(2.0 - lse)], rtol=1e-6
  )
  np.testing.assert_allclose(db, np.exp(np.array([0.5, 1.0, 2.0]) - lse), rtol=1e-6)
  h = 1e-3
  fd = (
    jaxsmx.logsumexp(a[2], b=b + np.array([0, h, 0], np.float32))
    - jaxsmx.logsumexp(a[2], b=b)
  ) / h
  np.testing.assert_allclose(db[1], fd, rtol=2e-2)


@pytest.mark.parametrize(
  "kind", ["all -inf", "fully masked", "all b = 0", "cancelling b", "zero size"]
)
def test_logsumexp_zero_sum_is_minus_inf_with_gradient_zero(kind):
  a = np.array([0.3, -1.0, 2.0], np.float32)
  b, where = np.ones(3, np.float32), None
  if kind == "all -inf":
    a = np.full(3, -np.inf, np.float32)
  elif kind == "fully masked":
    where = np.zeros(3, bool)
  elif kind == "all b = 0":
    b = np.zeros(3, np.float32)
  elif kind == "cancelling b":
    a, b = np.zeros(2, np.float32), np.array([1.0, -1.0], np.float32)
  else:
    a, b = np.zeros(0, np.float32), np.zeros(0, np.float32)

  def f(a, b):
    return jaxsmx.logsumexp(a, b=b, where=where, return_sign=True)

  (value, sign), grads = jax.jit(
    lambda a, b: (f(a, b), jax.grad(lambda a, b: f(a, b)[0], (0, 1))(a, b))
  )(a, b)
  assert value == -np.inf and sign == 0.0
  for g in grads:
    np.testing.assert_array_equal(g, np.zeros_like(g))
  assert jaxsmx.logsumexp(a, b=b, where=where) == -np.inf


def test_logsumexp_plus_inf_gives_plus_inf():
  import scipy.special

  a = np.array([1.0, np.inf, 3.0, np.inf], np.float32)
  for lse in (jaxsmx.logsumexp, jax.nn.logsumexp, scipy.special.logsumexp):
    assert lse(a) == np.inf
  # the gradient is the limit of the softmax weights: shared by the +inf entries
  np.testing.assert_array_equal(jax.grad(jaxsmx.logsumexp)(a), [0.0, 0.5, 0.0, 0.5])
  # with b: +inf with the sign of the +inf entries' b; NaN if they cancel
  b = np.array([1.0, -2.0, 1.0, 1.0], np.float32)
  value, sign = jaxsmx.logsumexp(a, b=b, return_sign=True)
  assert value == np.inf and sign == -1.0
  assert np.isnan(jaxsmx.logsumexp(a, b=b))
  assert np.isnan(jaxsmx.logsumexp(a, b=np.array([1.0, -1.0, 1.0, 1.0], np.float32)))
  np.testing.assert_array_equal(
    jax.grad(lambda a: jaxsmx.logsumexp(a, b=b, return_sign=True)[0])(a),
    [0.0, 2.0, 0.0, -1.0],
  )


def test_logsumexp_nan_stays_nan_in_its_slice():
  a = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]], np.float32)
  value = jaxsmx.logsumexp(a, axis=-1)
  assert np.isnan(value[0]) and np.isfinite(value[1])
  g = jax.grad(lambda a: jaxsmx.logsumexp(a, axis=-1).sum())(a)
  assert np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1]))


def test_logsumexp_negative_sum_is_nan_without_return_sign():
  a = np.zeros(2, np.float32)
  b = np.array([1.0, -2.0], np.float32)
  assert np.isnan(jaxsmx.logsumexp(a, b=b)) and np.isnan(jax.nn.logsumexp(a, b=b))
  # the gradient is NaN too (jax.nn: 0), so that the bad value cannot hide
  assert np.all(np.isnan(jax.grad(lambda a: jaxsmx.logsumexp(a, b=b))(a)))
  value, sign = jaxsmx.logsumexp(a, b=b, return_sign=True)
  np.testing.assert_allclose(value, 0.0, atol=1e-7)
  assert sign == -1.0


def test_logsumexp_axis_empty_tuple_reduces_nothing():
  a, b = lse_args((3, 4), (3, 4), seed=6)
  np.testing.assert_allclose(jaxsmx.logsumexp(a, axis=()), a, rtol=0)
  np.testing.assert_allclose(
    jaxsmx.logsumexp(a, axis=(), b=b), jax.nn.logsumexp(a, axis=(), b=b), rtol=1e-6
  )
  np.testing.assert_allclose(
    jaxsmx.logsumexp(a, axis=(), b=b), a + np.log(b), rtol=1e-6
  )
  np.testing.assert_array_equal(
    jax.grad(lambda a: jaxsmx.logsumexp(a, axis=()).sum())(a), 1.0
  )


def test_logsumexp_positional_order_is_jax_nns():
  a, b = lse_args((3, 4), (3, 4), signed=True, seed=7)
  m = row_mask((3, 4))
  got = jaxsmx.logsumexp(a, 1, b, True, True, m)
  want = jax.nn.logsumexp(a, 1, b, True, True, m)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_allclose(
    jaxsmx.logsumexp(a=a, b=np.abs(b)), jax.nn.logsumexp(a=a, b=np.abs(b)), rtol=1e-6
  )


@pytest.mark.parametrize(
  ("a_dtype", "b_dtype"),
  [
    ("bfloat16", "float32"),
    ("float32", "bfloat16"),
    ("float16", "float16"),
    ("int32", "bfloat16"),
  ],
)
def test_logsumexp_mixed_dtypes(a_dtype, b_dtype):
  a, b = lse_args((4, 6), (4, 6), seed=8)
  a = a.astype(a_dtype) if a_dtype != "int32" else np.round(a).astype(np.int32)
  b = jnp.asarray(b, b_dtype)
  got = jaxsmx.logsumexp(a, axis=-1, b=b)
  want = jax.nn.logsumexp(a, axis=-1, b=b)
  assert got.dtype == want.dtype, (got.dtype, want.dtype)
  np.testing.assert_allclose(f64(got), f64(want), rtol=2 * eps(got.dtype))
  if a_dtype == "int32":
    return
  da, db = jax.grad(lambda a, b: jaxsmx.logsumexp(a, axis=-1, b=b).sum(), (0, 1))(a, b)
  assert da.dtype == jnp.dtype(a_dtype) and db.dtype == jnp.dtype(b_dtype)
  # each gradient is computed in float32 (or better) and rounded once, to its
  # input's dtype: not through the other input's
  a64, b64 = f64(a), f64(b)
  w = np.exp(a64 - scipy_lse(a64, b64)[:, None])
  np.testing.assert_allclose(f64(da), b64 * w, rtol=eps(a_dtype), atol=1e-7)
  np.testing.assert_allclose(f64(db), w, rtol=eps(b_dtype), atol=1e-7)


def scipy_lse(a, b):
  import scipy.special

  return scipy.special.logsumexp(a, axis=-1, b=b)


def test_logsumexp_second_order(x64):
  a, b = lse_args((3, 4), (3, 4), seed=9)
  a, b = a.astype(np.float64), b.astype(np.float64)
  check_grads(
    lambda a, b: jaxsmx.logsumexp(a, axis=-1, b=b), (a, b), order=2, modes=("rev",)
  )
  # the closed-form Hessian in b: -w w^T per slice
  hb = jax.hessian(lambda b: jaxsmx.logsumexp(a[0], b=b))(b[0])
  w = np.exp(a[0] - scipy_lse(a[0], b[0]))
  np.testing.assert_allclose(hb, -np.outer(w, w), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
  a=hnp.arrays(np.float64, (3, 4), elements=st.floats(-50, 50)),
  # 0 or at least 1e-6 in magnitude: XLA on CPU flushes subnormals to zero
  b=hnp.arrays(
    np.float64,
    (3, 4),
    elements=st.one_of(st.just(0.0), st.floats(1e-6, 3), st.floats(-3, -1e-6)),
  ),
)
def test_logsumexp_signed_b_matches_scipy_property(a, b):
  import scipy.special

  with jax.enable_x64(True):
    value, sign = _lse_axis1(a, b)
  with np.errstate(all="ignore"):  # scipy's own all-zero-b slices
    want, want_sign = scipy.special.logsumexp(a, axis=1, b=b, return_sign=True)
    magnitude = scipy.special.logsumexp(a, axis=1, b=np.abs(b))
    ok = np.isfinite(want) & (want - magnitude > -20)
  # a sum that cancels to nearly 0 leaves neither its sign nor its value
  # determined by rounding: compare the slices cancelled by less than e^-20
  np.testing.assert_array_equal(np.asarray(sign)[ok], want_sign[ok])
  np.testing.assert_allclose(np.asarray(value)[ok], want[ok], rtol=1e-9, atol=1e-9)
  zero = np.all(b == 0, axis=1)
  assert np.all(np.asarray(value)[zero] == -np.inf) and np.all(
    np.asarray(sign)[zero] == 0
  )


@jax.jit
def _lse_axis1(a, b):
  return jaxsmx.logsumexp(a, axis=1, b=b, return_sign=True)


@pytest.mark.parametrize("transform", ["jit", "vmap"])
def test_logsumexp_b_under_transforms(transform):
  a, b = lse_args((3, 4, 5), (3, 4, 5), signed=True, seed=10)

  def f(a, b):
    return jaxsmx.logsumexp(a, axis=-1, b=b, return_sign=True)

  def ref(a, b):
    return jax.nn.logsumexp(a, axis=-1, b=b, return_sign=True)

  t = jax.jit if transform == "jit" else jax.vmap
  for got, want in zip(t(f)(a, b), t(ref)(a, b), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _quiet_under_debug_tools(f, *args):
  """f's value and gradient (in every argument) have no NaN, and neither
  jax.debug_nans (jitted and op by op) nor checkify.float_checks reports."""
  from jax.experimental import checkify

  argnums = tuple(range(len(args)))
  vg = jax.value_and_grad(lambda *a: jnp.sum(f(*a)), argnums)
  value, grads = jax.jit(vg)(*args)
  assert not np.isnan(value) and not any(np.any(np.isnan(g)) for g in grads)
  with jax.debug_nans(True):
    jax.jit(vg)(*args)
    with jax.disable_jit():
      vg(*args)
  for fn in (lambda *a: jnp.sum(f(*a)), vg):
    err, _ = jax.jit(checkify.checkify(fn, errors=checkify.float_checks))(*args)
    assert err.get() is None, err.get()


def test_logsumexp_b_edges_keep_debug_tools_quiet():
  a = np.array(
    [[1.0, -np.inf, 0.5, 2.0], [-np.inf] * 4, [0.3, 0.1, -1.0, 0.0]], np.float32
  )
  b = np.array([[1.0, 0.0, 0.0, 2.0], [1.0, 1.0, 0.0, 0.0], [0.0] * 4], np.float32)
  m = np.array([[True, True, False, True], [True] * 4, [True, False, True, True]])
  for kw in ({}, {"return_sign": True}):
    lse = lambda a, b, kw=kw: _first(jaxsmx.logsumexp(a, axis=-1, b=b, **kw))
    _quiet_under_debug_tools(lse, a, b)
    _quiet_under_debug_tools(
      lambda a, b, kw=kw: _first(jaxsmx.logsumexp(a, axis=-1, b=b, where=m, **kw)), a, b
    )
  _quiet_under_debug_tools(lambda a: jaxsmx.logsumexp(a, axis=()), a)
  _quiet_under_debug_tools(
    lambda a: jaxsmx.logsumexp(a, axis=-1), np.zeros((2, 0), np.float32)
  )


def _first(out):
  return out[0] if isinstance(out, tuple) else out


def test_the_debug_tools_check_catches_a_formed_nan():
  # jax.nn.logsumexp forms a NaN in its gradient on an all -inf slice
  a = np.array([[-np.inf, -np.inf], [0.0, 1.0]], np.float32)
  with pytest.raises((AssertionError, FloatingPointError)):
    _quiet_under_debug_tools(lambda a: jax.nn.logsumexp(a, axis=-1), a)
  _quiet_under_debug_tools(lambda a: jaxsmx.logsumexp(a, axis=-1), a)


@pytest.mark.parametrize("name", NAMES)
def test_an_eager_call_is_one_compiled_call(name):
  # as jax.nn's functions are: the trace has one jit call and nothing else, so
  # that an eager call costs one dispatch, not one per primitive
  x, m = logits(), row_mask()
  b = np.abs(x) + 0.1
  calls = [
    lambda x: getattr(jaxsmx, name)(x),
    lambda x: getattr(jaxsmx, name)(x, where=m),
  ]
  if name == "logsumexp":
    calls.append(lambda x: jaxsmx.logsumexp(x, -1, b, return_sign=True))
  for f in calls:
    eqns = jax.make_jaxpr(f)(x).eqns
    assert [e.primitive.name for e in eqns] == ["jit"], eqns


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
    f(x, axis=-1, where=np.ones((4, 7), np.int32))
  # logsumexp broadcasts a, b and where against each other, as jax.nn does
  with pytest.raises(
    ValueError,
    match=r"broadcast (to the input's shape \(4, 7\)|against each other).*\(3,\)",
  ):
    f(x, axis=-1, where=np.ones(3, bool))
  with pytest.raises(TypeError, match=r"axis must be an int"):
    f(x, axis=1.0)


# ---------------------------------------------------------------------------
# docstring examples


def test_doctests():
  result = doctest.testmod(jaxsmx._softmax)
  assert result.attempted > 0
  assert result.failed == 0
