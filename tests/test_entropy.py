"""Tests for jaxsmx._entropy: softmax_entropy, entropy, cross_entropy, kl."""

from __future__ import annotations

import doctest
import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from conftest import LOW_DTYPES, assert_vjp_matches, eps, f64, np_log_softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import jaxsmx
import jaxsmx._entropy

NAMES = ("softmax_entropy", "entropy", "cross_entropy", "kl_divergence")
TWO_ARGS = ("cross_entropy", "kl_divergence")


def jgrad(f, argnums=0):
  return jax.jit(jax.grad(f, argnums))


# ---------------------------------------------------------------------------
# inputs: each function gets a tuple of valid arguments for a [5, 7] batch


def logits(shape=(5, 7), seed=0, scale=2.0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def probs(shape=(5, 7), seed=0, dtype=jnp.float32, low=0.0):
  """Rows that sum to one; with low > 0 every entry is at least about low/C."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(low, 1.0, shape)
  return jnp.asarray(w / w.sum(-1, keepdims=True), dtype)


def inputs(name, shape=(5, 7), dtype=jnp.float32, seed=0):
  if name == "softmax_entropy":
    return (logits(shape, seed, dtype=dtype),)
  if name == "entropy":
    return (probs(shape, seed, dtype),)
  if name == "cross_entropy":
    return probs(shape, seed, dtype), probs(shape, seed + 1, dtype, low=0.2)
  lq = jnp.log(probs(shape, seed + 1, low=0.2)).astype(dtype)
  return lq, probs(shape, seed, dtype)


def row_mask(shape=(5, 7), seed=1):
  """A random mask with at least one True per row."""
  rng = np.random.default_rng(seed)
  m = rng.random(shape) < 0.6
  m[..., 0] = True
  return jnp.asarray(rng.permuted(m, axis=-1))


def ours(name, where=None, axis=-1):
  f = getattr(jaxsmx, name)
  return lambda *args: f(*args, axis=axis, where=where)


# ---------------------------------------------------------------------------
# float64 NumPy references (over the last axis)


def np_ref(name, *args):
  args = [f64(a) for a in args]
  if name == "softmax_entropy":
    lp = np_log_softmax(args[0])
    return -np.sum(np.exp(lp) * lp, -1)
  if name == "entropy":
    return scipy.special.entr(args[0]).sum(-1)
  if name == "cross_entropy":
    p, q = args
    return -np.sum(np.where(p == 0, 0.0, p * np.log(q)), -1)
  lq, t = args
  return scipy.special.rel_entr(t, np.exp(lq)).sum(-1)


# Plain autodiff references: jnp ops only, differentiated by JAX itself.
def plain(name, where=None):
  keep = (lambda v: v) if where is None else (lambda v: jnp.where(where, v, 0.0))

  def softmax_entropy(z):
    z = z if where is None else jnp.where(where, z, -jnp.inf)
    m = jnp.max(z, -1, keepdims=True)
    lp = z - m - jnp.log(jnp.sum(jnp.exp(z - m), -1, keepdims=True))
    lp_safe = keep(lp)
    return -jnp.sum(jnp.exp(lp) * lp_safe, -1)

  def entropy(p):
    return -jnp.sum(keep(p * jnp.log(p)), -1)

  def cross_entropy(p, q):
    return -jnp.sum(keep(p * jnp.log(q)), -1)

  def kl_divergence(lq, t):
    return jnp.sum(keep(t * (jnp.log(t) - lq)), -1)

  return locals()[name]


# ---------------------------------------------------------------------------
# references


def torch_entropy(z):
  torch = pytest.importorskip("torch")
  t = torch.from_numpy(np.asarray(z))
  return torch.distributions.Categorical(logits=t).entropy().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_entropy_matches_torch(dtype, transform):
  with jax.enable_x64(dtype == "float64"):
    z = logits(dtype=dtype).at[1, 3].set(-jnp.inf).at[2, :3].set(-jnp.inf)
    got = transform(jaxsmx.softmax_entropy)(z)
    assert got.dtype == z.dtype
    tol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, torch_entropy(z), rtol=tol, atol=tol)
    finite = np.asarray(jnp.isfinite(z[0]))
    np.testing.assert_allclose(got[0], np_ref("softmax_entropy", z[0][finite]), rtol=tol)


def test_entropy_matches_scipy(transform):
  p = probs().at[1, 2].set(0.0).at[3, :].set(0.0)
  got = transform(jaxsmx.entropy)(p)
  np.testing.assert_allclose(got, scipy.special.entr(f64(p)).sum(-1), rtol=1e-6)
  # no renormalisation: unnormalised inputs too
  p = 3.0 * probs(seed=4)
  np.testing.assert_allclose(
      transform(jaxsmx.entropy)(p), scipy.special.entr(f64(p)).sum(-1), rtol=1e-6
  )


def test_cross_entropy_matches_numpy_formula(transform):
  p, q = inputs("cross_entropy")
  p = p.at[0, 1].set(0.0)
  got = transform(jaxsmx.cross_entropy)(p, q)
  want = -np.sum(f64(p) * np.log(f64(q)), -1)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_kl_divergence_matches_optax(transform):
  lq, t = inputs("kl_divergence")
  got = transform(jaxsmx.kl_divergence)(lq, t)
  np.testing.assert_allclose(got, optax.losses.kl_divergence(lq, t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got, np_ref("kl_divergence", lq, t), rtol=1e-5, atol=1e-6)
  m = row_mask()
  np.testing.assert_allclose(
      jaxsmx.kl_divergence(lq, t, where=m),
      optax.losses.kl_divergence(lq, t, where=m),
      rtol=1e-5,
      atol=1e-6,
  )


def test_kl_is_cross_entropy_minus_entropy():
  p, q = inputs("cross_entropy")
  np.testing.assert_allclose(
      jaxsmx.kl_divergence(jnp.log(q), p),
      jaxsmx.cross_entropy(p, q) - jaxsmx.entropy(p),
      atol=1e-6,
  )
  z = logits()
  np.testing.assert_allclose(
      jaxsmx.softmax_entropy(z), jaxsmx.entropy(jaxsmx.softmax(z)), rtol=1e-5
  )


# ---------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_float64_reference(name, x64):
  args = inputs(name, dtype=jnp.float64)
  got = ours(name)(*args)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, np_ref(name, *args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("low", LOW_DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_within_two_eps(name, low, transform):
  args = inputs(name, (16, 10), dtype=low)
  got = transform(ours(name))(*args)
  assert got.dtype == jnp.dtype(low)
  ref = np_ref(name, *args)  # float64, from the same low-precision inputs
  np.testing.assert_array_less(np.abs(f64(got) - ref), 2 * eps(low) * np.abs(ref))


@pytest.mark.parametrize("low", LOW_DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_gradients(name, low):
  args = inputs(name, (4, 6), dtype=low)
  argnums = tuple(range(len(args)))
  f = lambda *a: jnp.sum(ours(name)(*a))
  got = jgrad(f, argnums)(*args)
  want = jgrad(f, argnums)(*[a.astype(jnp.float32) for a in args])
  for g, w, a in zip(got, want, args, strict=True):
    assert g.dtype == a.dtype
    np.testing.assert_allclose(f64(g), w, rtol=4 * eps(low), atol=4 * eps(low))


# ---------------------------------------------------------------------------
# the bwd rules against plain autodiff


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_bwd_matches_autodiff_float32(name, masked):
  m = row_mask() if masked else None
  args = inputs(name)
  if name == "entropy":
    args = (probs(low=0.2),)  # plain p log p has a NaN gradient at p = 0
  assert_vjp_matches(ours(name, m), plain(name, m), args, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_bwd_matches_autodiff_float64(name, masked, x64):
  m = row_mask() if masked else None
  args = inputs(name, dtype=jnp.float64)
  if name == "entropy":
    args = (probs(low=0.2, dtype=jnp.float64),)
  assert_vjp_matches(ours(name, m), plain(name, m), args, rtol=1e-12, atol=1e-12)


@jax.custom_vjp
def _wrong_softmax_entropy(z):
  return plain("softmax_entropy")(z)


def _wrong_fwd(z):
  return plain("softmax_entropy")(z), z


def _wrong_bwd(z, g):
  lp = jax.nn.log_softmax(z)
  return (-g[..., None] * jnp.exp(lp) * lp,)  # drops the + H term


_wrong_softmax_entropy.defvjp(_wrong_fwd, _wrong_bwd)


def test_checks_catch_a_wrong_bwd():
  z = logits()
  with pytest.raises(AssertionError, match="cotangent of argument 0"):
    assert_vjp_matches(
        _wrong_softmax_entropy, plain("softmax_entropy"), (z,), rtol=1e-6, atol=1e-6
    )
  with jax.enable_x64(True), pytest.raises(AssertionError):
    check_grads(
        _wrong_softmax_entropy, (logits((2, 4), dtype=jnp.float64),), 1, ("rev",)
    )


def _check_grads_args(name):
  rng = np.random.default_rng(3)
  shape = (2, 4)
  if name == "softmax_entropy":
    return (jnp.asarray(rng.standard_normal(shape)),)
  u = lambda: jnp.asarray(rng.uniform(0.2, 1.0, shape))
  if name == "kl_divergence":
    return jnp.log(u()), u()
  return (u(),) if name == "entropy" else (u(), u())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_check_grads_second_order(name, masked, x64):
  m = row_mask((2, 4)) if masked else None
  check_grads(ours(name, m), _check_grads_args(name), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# transformations


def scalar_loss(name):
  """A scalar of every argument, weighting each slice differently."""
  return lambda *args: jnp.sum(ours(name)(*args) * jnp.arange(1.0, 1.0 + len(args[0])))


def grads(name, *args):
  return jax.grad(scalar_loss(name), tuple(range(len(args))))(*args)


def plain_grads(name, *args):
  f = lambda *a: jnp.sum(plain(name)(*a) * jnp.arange(1.0, 1.0 + len(a[0])))
  return jax.grad(f, tuple(range(len(args))))(*args)


@pytest.mark.parametrize("name", NAMES)
def test_grad_vjp_jacrev(name):
  args = inputs(name, (3, 5))
  if name == "entropy":
    args = (probs((3, 5), low=0.2),)
  for g, w in zip(grads(name, *args), plain_grads(name, *args), strict=True):
    np.testing.assert_allclose(g, w, atol=1e-6)
  out, vjp = jax.vjp(ours(name), *args)
  ct = jnp.linspace(-1.0, 1.0, out.size).reshape(out.shape)
  for g, w in zip(vjp(ct), jax.vjp(plain(name), *args)[1](ct), strict=True):
    np.testing.assert_allclose(g, w, atol=1e-6)
  argnums = tuple(range(len(args)))
  jacs = jax.jit(jax.jacrev(ours(name), argnums))(*args)
  want = jax.jit(jax.jacrev(plain(name), argnums))(*args)
  for j, w in zip(jacs, want, strict=True):
    np.testing.assert_allclose(j, w, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_and_jacrev_jacrev(name, x64):
  args = _check_grads_args(name)
  argnums = tuple(range(len(args)))
  f = scalar_loss(name)
  ref = lambda *a: jnp.sum(plain(name)(*a) * jnp.arange(1.0, 1.0 + len(a[0])))

  @jax.jit
  def second_derivatives(*args):
    return (
        jax.hessian(f, argnums)(*args),
        jax.hessian(ref, argnums)(*args),
        jax.jacrev(jax.jacrev(f, argnums), argnums)(*args),
    )

  h, want, jj = second_derivatives(*args)
  for a, b, c in zip(
      jax.tree.leaves(h), jax.tree.leaves(want), jax.tree.leaves(jj), strict=True
  ):
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(c, b, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_jit_nested_vmap_checkpoint_scan(name):
  args = inputs(name, (2, 3, 5))
  if name == "entropy":
    args = (probs((2, 3, 5), low=0.2),)
  want = ours(name)(*args)
  np.testing.assert_allclose(jax.jit(ours(name))(*args), want, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.vmap(ours(name)))(*args), want, rtol=1e-6)
  argnums = tuple(range(len(args)))
  f = lambda *a: jnp.sum(ours(name)(*a))
  want_g = jgrad(f, argnums)(*args)
  for got in [
      jgrad(jax.checkpoint(f), argnums)(*args),
      jgrad(lambda *a: jnp.sum(jax.vmap(jax.vmap(ours(name)))(*a)), argnums)(*args),
  ]:
    for g, w in zip(got, want_g, strict=True):
      np.testing.assert_allclose(g, w, atol=1e-6)

  def scanned(*args):
    step = lambda c, xs: (c + jnp.sum(ours(name)(*xs)), None)
    return lax.scan(step, 0.0, args)[0]

  np.testing.assert_allclose(scanned(*args), jnp.sum(want), rtol=1e-6)
  for g, w in zip(jgrad(scanned, argnums)(*args), want_g, strict=True):
    np.testing.assert_allclose(g, w, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_is_refused(name):
  args = inputs(name, (3,))
  tangents = tuple(jnp.ones_like(a) for a in args)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(ours(name), args, tangents)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jacfwd(ours(name))(*args)


# ---------------------------------------------------------------------------
# numerics: logits


def test_softmax_entropy_huge_logits_float32():
  z = jnp.array([[1e30, 1e30, -1e30, 0.0], [1e30, -1e30, 0.0, -5e29]], jnp.float32)
  h = jaxsmx.softmax_entropy(z)
  np.testing.assert_allclose(h, [np.log(2.0), 0.0], atol=1e-7)
  g = jax.grad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z) * jnp.array([1.0, 2.0])))(z)
  np.testing.assert_array_equal(g, 0.0)  # the closed form: -a (log a + H) = 0
  # a finite-spread slice next to huge offsets keeps its exact value and grad
  base = logits((4,))
  for shift in (1e30, -1e30):
    zs = jnp.stack([base, base + shift])
    np.testing.assert_allclose(jaxsmx.softmax_entropy(zs)[0], np_ref("softmax_entropy", base), rtol=1e-6)
    assert np.all(np.isfinite(jaxsmx.softmax_entropy(zs)))
    assert np.all(np.isfinite(jax.grad(lambda z: jaxsmx.softmax_entropy(z).sum())(zs)))


def test_softmax_entropy_minus_inf_logits(transform):
  z = logits((3, 6)).at[:, 2].set(-jnp.inf).at[1, 4].set(-jnp.inf)
  finite = np.asarray(jnp.isfinite(z))
  # the naive formula is NaN in value and gradient; jaxsmx is finite
  naive = lambda z: -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), -1)
  assert np.all(np.isnan(naive(z)))
  assert np.all(np.isnan(jax.grad(lambda z: naive(z).sum())(z)))
  h = transform(jaxsmx.softmax_entropy)(z)
  np.testing.assert_allclose(h, torch_entropy(z), rtol=1e-6)
  g = np.asarray(jgrad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z)))(z))
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(g[~finite], 0.0)
  # each slice equals the slice without its -inf logits, value and gradient
  for i in range(3):
    zi = z[i][finite[i]]
    np.testing.assert_allclose(h[i], jaxsmx.softmax_entropy(zi), rtol=1e-6)
    gi = jax.grad(plain("softmax_entropy"))(zi)
    np.testing.assert_allclose(g[i][finite[i]], gi, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_slice_is_zero_with_zero_gradient(name, transform):
  args = inputs(name)
  m = row_mask().at[2].set(False)
  h = transform(lambda m, *a: ours(name, m)(*a))(m, *args)
  assert h[2] == 0.0
  np.testing.assert_allclose(
      np.delete(np.asarray(h), 2), np.delete(np.asarray(ours(name, m)(*args)), 2)
  )
  argnums = tuple(range(len(args)))
  gs = jgrad(lambda *a: jnp.sum(ours(name, m)(*a)), argnums)(*args)
  for g in gs:
    np.testing.assert_array_equal(g[2], 0.0)
    assert np.all(np.isfinite(g))


def test_all_minus_inf_slice_has_zero_entropy(transform):
  z = logits((3, 5)).at[1].set(-jnp.inf)
  h = transform(jaxsmx.softmax_entropy)(z)
  assert h[1] == 0.0
  np.testing.assert_allclose(h[jnp.array([0, 2])], np_ref("softmax_entropy", z[jnp.array([0, 2])]), rtol=1e-6)
  g = jgrad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z)))(z)
  np.testing.assert_array_equal(g[1], 0.0)
  assert np.all(np.isfinite(g))


def _poison(name, bad):
  """Arguments with `bad` at [1, 3] in every argument in turn."""
  for k, a in enumerate(inputs(name)):
    args = list(inputs(name))
    args[k] = a.at[1, 3].set(bad)
    yield args


@pytest.mark.parametrize("name", NAMES)
def test_nan_poisons_only_its_slice(name, transform):
  want = ours(name)(*inputs(name))
  for args in _poison(name, jnp.nan):
    got = np.asarray(transform(ours(name))(*args))
    assert np.isnan(got[1])
    np.testing.assert_allclose(np.delete(got, 1), np.delete(np.asarray(want), 1), rtol=1e-6)
    gs = jgrad(lambda *a: jnp.sum(ours(name)(*a)), tuple(range(len(args))))(*args)
    for g in gs:
      assert np.all(np.isfinite(np.delete(np.asarray(g), 1, axis=0)))


@pytest.mark.parametrize("name", TWO_ARGS)
def test_nan_is_not_hidden_by_a_zero_weight(name):
  # p = 0 (or t = 0) gives a 0 term, but a NaN partner must still show.
  a, b = inputs(name)
  if name == "cross_entropy":
    a, b = a.at[1, 3].set(0.0), b.at[1, 3].set(jnp.nan)
  else:
    a, b = a.at[1, 3].set(jnp.nan), b.at[1, 3].set(0.0)
  got = np.asarray(ours(name)(a, b))
  assert np.isnan(got[1]) and np.all(np.isfinite(np.delete(got, 1)))


def test_plus_inf_logit_poisons_only_its_slice(transform):
  z = logits((3, 5)).at[1, 3].set(jnp.inf)
  got = np.asarray(transform(jaxsmx.softmax_entropy)(z))
  assert np.isnan(got[1])
  np.testing.assert_allclose(got[[0, 2]], np_ref("softmax_entropy", z[jnp.array([0, 2])]), rtol=1e-6)
  g = np.asarray(jgrad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z)))(z))
  assert np.all(np.isnan(g[1])) and np.all(np.isfinite(g[[0, 2]]))


def test_plus_inf_probability_is_not_hidden():
  # +inf is no probability; entropy follows scipy.special.entr (-inf), never 0.
  p = probs((3, 5)).at[1, 3].set(jnp.inf)
  got = np.asarray(jaxsmx.entropy(p))
  np.testing.assert_allclose(got, scipy.special.entr(f64(p)).sum(-1), rtol=1e-6)
  assert np.isneginf(got[1])


# ---------------------------------------------------------------------------
# numerics: zero probabilities


def test_entropy_zero_probability():
  p = jnp.array([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8]])
  np.testing.assert_allclose(jaxsmx.entropy(p), scipy.special.entr(f64(p)).sum(-1), rtol=1e-6)
  g = np.asarray(jax.grad(lambda p: jaxsmx.entropy(p).sum())(p))
  assert not np.any(np.isnan(g))
  assert np.isposinf(g[0, 2]) and np.isposinf(g[1, 1])  # -(log 0 + 1): documented
  np.testing.assert_allclose(g[0, :2], -(np.log(0.5) + 1.0), rtol=1e-6)
  # a slice that does not reach the output gets 0, not 0 * inf = NaN
  g = np.asarray(jax.grad(lambda p: jaxsmx.entropy(p)[1])(p))
  np.testing.assert_array_equal(g[0], 0.0)


def test_cross_entropy_zero_probability():
  p = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
  q = jnp.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
  h = np.asarray(jaxsmx.cross_entropy(p, q))
  np.testing.assert_allclose(h[:2], [np.log(2.0), np.log(4.0)], rtol=1e-6)
  assert np.isposinf(h[2])  # p > 0 = q
  gp, gq = jax.grad(lambda p, q: jaxsmx.cross_entropy(p, q)[:2].sum(), (0, 1))(p, q)
  assert not np.any(np.isnan(gp)) and not np.any(np.isnan(gq))
  assert gq[0, 2] == 0.0  # p = 0: the term is 0 whatever q is
  assert np.isposinf(gp[0, 2])  # -log q at q = 0: documented
  np.testing.assert_array_equal(gp[2], 0.0)
  np.testing.assert_array_equal(gq[2], 0.0)


def test_kl_divergence_zero_target_gradients_vs_optax():
  lq = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]]))
  t = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
  d = np.asarray(jaxsmx.kl_divergence(lq, t))
  np.testing.assert_allclose(d, [0.5 * np.log(2.0), 0.0], atol=1e-7)
  # optax: NaN value where t = 0 and log q = -inf, NaN gradient at every t = 0
  assert np.isnan(optax.losses.kl_divergence(lq, t)[1])
  g_optax = jax.grad(lambda t: optax.losses.kl_divergence(lq, t)[0])(t)
  assert np.isnan(g_optax[0, 2])
  # jaxsmx: never NaN; d/dt at t = 0 is the one-sided -inf (+inf with log q = -inf)
  glq, gt = jax.grad(lambda lq, t: jaxsmx.kl_divergence(lq, t).sum(), (0, 1))(lq, t)
  assert not np.any(np.isnan(glq)) and not np.any(np.isnan(gt))
  assert np.isneginf(gt[0, 2]) and np.isposinf(gt[1, 2])
  np.testing.assert_allclose(glq, -t)
  np.testing.assert_allclose(gt[0, :2], np.log([0.5, 0.5]) + 1 - np.log([0.5, 0.25]), rtol=1e-6)


# ---------------------------------------------------------------------------
# properties


def _distribution(n):
  return hnp.arrays(
      np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0))
  ).filter(lambda w: w.sum() > 0).map(lambda w: w / w.sum())


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.sampled_from([2, 5]))
def test_gibbs_inequality_and_kl_nonnegative(data, n):
  p = data.draw(_distribution(n))
  q = data.draw(_distribution(n))
  with jax.enable_x64(True):
    hp = float(jaxsmx.entropy(p))
    hpq = float(jaxsmx.cross_entropy(p, q))
    kl = float(jaxsmx.kl_divergence(jnp.log(q), p))
    assert hpq >= hp - 1e-12
    assert kl >= -1e-12
    if np.isfinite(hpq):
      np.testing.assert_allclose(kl, hpq - hp, atol=1e-10)
    else:
      assert kl == np.inf
    np.testing.assert_allclose(float(jaxsmx.cross_entropy(p, p)), hp, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(z=hnp.arrays(np.float32, 5, elements=st.floats(-30, 30, width=32)))
def test_softmax_entropy_is_between_zero_and_log_c(z):
  h = float(jaxsmx.softmax_entropy(z))
  assert -1e-6 <= h <= np.log(5.0) + 1e-6


# ---------------------------------------------------------------------------
# structure: where is slicing, axis is moveaxis


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_slicing(name):
  args, m = inputs(name), row_mask()
  got = ours(name, m)(*args)
  argnums = tuple(range(len(args)))
  f = lambda m, *a: jnp.sum(ours(name, m)(*a))
  gs = jgrad(f, tuple(k + 1 for k in argnums))(m, *args)
  for i in range(2):
    sliced = [a[i][m[i]] for a in args]
    np.testing.assert_allclose(got[i], ours(name)(*sliced), rtol=1e-6)
    want = jgrad(f, tuple(k + 1 for k in argnums))(None, *sliced)
    for g, w in zip(gs, want, strict=True):
      np.testing.assert_allclose(g[i][m[i]], w, atol=1e-6)
      np.testing.assert_array_equal(g[i][~m[i]], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_per_row_where_selects_slices(name):
  args = inputs(name)
  rows = jnp.array([True, False, True, True, False])
  got = np.asarray(ours(name, rows)(*args))
  full = np.asarray(ours(name)(*args))
  np.testing.assert_array_equal(got[~rows], 0.0)
  np.testing.assert_allclose(got[rows], full[rows], rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [0, 1])
def test_axis_equals_moveaxis(name, k):
  args = inputs(name, (3, 4, 5))
  got = ours(name, axis=k)(*args)
  want = ours(name)(*[jnp.moveaxis(a, k, -1) for a in args])
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_tuple_axes_equal_reshape(name):
  args = inputs(name, (2, 3, 4, 5))
  got = ours(name, axis=(1, 3))(*args)
  flat = [jnp.moveaxis(a, (1, 3), (2, 3)).reshape(2, 4, 15) for a in args]
  np.testing.assert_allclose(got, ours(name)(*flat), rtol=1e-6)
  np.testing.assert_allclose(ours(name, axis=(3, 1))(*args), got, rtol=1e-6)


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name):
  f = getattr(jaxsmx, name)
  args = inputs(name, (4, 7))
  for k in range(len(args)):
    bad = list(args)
    bad[k] = jnp.ones((4, 7), jnp.int32)
    with pytest.raises(TypeError, match=r"must have a floating dtype; got int32"):
      f(*bad)
  with pytest.raises(ValueError, match=r"axis 2 is out of range .* rank 2"):
    f(*args, axis=2)
  with pytest.raises(ValueError, match=r"names the same axis twice"):
    f(*args, axis=(0, -2))
  with pytest.raises(TypeError, match=r"where must be a boolean mask; got dtype float32"):
    f(*args, where=jnp.ones((4, 7)))
  with pytest.raises(ValueError, match=r"broadcast to the input's shape \(4, 7\).*got \(3,\)"):
    f(*args, where=jnp.ones(3, bool))
  with pytest.raises(ValueError, match=r"got \(4, 6\)"):
    f(*args, where=jnp.ones((4, 6), bool))


@pytest.mark.parametrize("name", TWO_ARGS)
def test_shape_mismatch_shows_both_shapes(name):
  a, b = inputs(name, (4, 7))
  first, second = ("p", "q") if name == "cross_entropy" else ("log_predictions", "targets")
  with pytest.raises(
      ValueError, match=rf"{second} must have the same shape as {first}: {first} \(4, 7\), {second} \(7,\)"
  ):
    getattr(jaxsmx, name)(a, b[0])


# ---------------------------------------------------------------------------
# docstring examples


def test_doctests():
  result = doctest.testmod(jaxsmx._entropy)
  assert result.attempted > 0
  assert result.failed == 0
