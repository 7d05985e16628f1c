"""Tests for jaxsmx/_entropy.py and _kl.py: softmax_entropy, entropy,
cross_entropy, kl_divergence.

As in test_softmax.py, data is built and inspected with NumPy and each test
compiles as few programs as it can.
"""

from __future__ import annotations

import doctest

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
import jaxsmx._kl

NAMES = ("softmax_entropy", "entropy", "cross_entropy", "kl_divergence")
TWO_ARGS = ("cross_entropy", "kl_divergence")


def jgrad(f, argnums=0):
  return jax.jit(jax.grad(f, argnums))


# ---------------------------------------------------------------------------
# inputs: each function gets a tuple of valid arguments for a [5, 7] batch


def logits(shape=(5, 7), seed=0, scale=2.0, dtype=np.float32) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(dtype)


def probs(shape=(5, 7), seed=0, dtype=np.float32, low=0.0) -> np.ndarray:
  """Rows that sum to one; with low > 0 every entry is at least about low/C."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(low, 1.0, shape)
  return (w / w.sum(-1, keepdims=True)).astype(dtype)


def inputs(name, shape=(5, 7), dtype=np.float32, seed=0) -> tuple:
  dtype = jnp.dtype(dtype)
  if name == "softmax_entropy":
    return (logits(shape, seed, dtype=dtype),)
  if name == "entropy":
    return (probs(shape, seed, dtype),)
  if name == "cross_entropy":
    return probs(shape, seed, dtype), probs(shape, seed + 1, dtype, low=0.2)
  lq = np.log(probs(shape, seed + 1, np.float64, low=0.2)).astype(dtype)
  return lq, probs(shape, seed, dtype)


def row_mask(shape=(5, 7), seed=1) -> np.ndarray:
  """A random mask with at least one True per row."""
  rng = np.random.default_rng(seed)
  m = rng.random(shape) < 0.6
  m[..., 0] = True
  return rng.permuted(m, axis=-1)


def ours(name, where=None, axis=-1):
  f = getattr(jaxsmx, name)
  return lambda *args: f(*args, axis=axis, where=where)


# ---------------------------------------------------------------------------
# float64 NumPy references (over the last axis)


def np_ref(name, *args):
  args = [f64(a) for a in args]
  if name == "softmax_entropy":
    lp = np_log_softmax(args[0])
    return -np.sum(np.where(lp == -np.inf, 0.0, np.exp(lp) * lp), -1)
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
  t = torch.from_numpy(np.array(z))
  return torch.distributions.Categorical(logits=t).entropy().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_entropy_matches_torch(dtype, transform):
  with jax.enable_x64(dtype == "float64"):
    z = logits(dtype=dtype)
    z[1, 3] = z[2, :3] = -np.inf
    got = transform(jaxsmx.softmax_entropy)(z)
    assert got.dtype == z.dtype
    tol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, torch_entropy(z), rtol=tol, atol=tol)
    np.testing.assert_allclose(got[0], np_ref("softmax_entropy", z[0]), rtol=tol)


def test_entropy_matches_scipy(transform):
  p = probs()
  p[1, 2] = p[3, :] = 0.0
  got = transform(jaxsmx.entropy)(p)
  np.testing.assert_allclose(got, scipy.special.entr(f64(p)).sum(-1), rtol=1e-6)
  # no renormalisation: unnormalised inputs too
  p = 3.0 * probs(seed=4)
  np.testing.assert_allclose(
    transform(jaxsmx.entropy)(p), scipy.special.entr(f64(p)).sum(-1), rtol=1e-6
  )


def test_cross_entropy_matches_numpy_formula(transform):
  p, q = inputs("cross_entropy")
  p[0, 1] = 0.0
  got = transform(jaxsmx.cross_entropy)(p, q)
  want = -np.sum(f64(p) * np.log(f64(q)), -1)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_kl_divergence_matches_optax(transform):
  lq, t = inputs("kl_divergence")
  m = row_mask()
  got = transform(jaxsmx.kl_divergence)(lq, t)
  np.testing.assert_allclose(
    got, optax.losses.kl_divergence(lq, t), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(got, np_ref("kl_divergence", lq, t), rtol=1e-5, atol=1e-6)
  got = transform(lambda lq, t, m: jaxsmx.kl_divergence(lq, t, where=m))(lq, t, m)
  np.testing.assert_allclose(
    got, optax.losses.kl_divergence(lq, t, where=m), rtol=1e-5, atol=1e-6
  )


def test_kl_is_cross_entropy_minus_entropy():
  p, q = inputs("cross_entropy")
  np.testing.assert_allclose(
    jaxsmx.kl_divergence(np.log(q), p),
    jaxsmx.cross_entropy(p, q) - jaxsmx.entropy(p),
    atol=1e-6,
  )
  z = logits()
  np.testing.assert_allclose(
    jaxsmx.softmax_entropy(z), jaxsmx.entropy(jaxsmx.softmax(z)), rtol=1e-5
  )


# ---------------------------------------------------------------------------
# dtypes


def test_float64_matches_float64_reference(x64):
  for name in NAMES:
    args = inputs(name, dtype=np.float64)
    got = ours(name)(*args)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(
      got, np_ref(name, *args), rtol=1e-12, atol=1e-12, err_msg=name
    )


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_within_two_eps(low, transform):
  for name in NAMES:
    args = inputs(name, (16, 10), dtype=low)
    got = transform(ours(name))(*args)
    assert got.dtype == jnp.dtype(low)
    ref = np_ref(name, *args)  # float64, from the same low-precision inputs
    np.testing.assert_array_less(
      np.abs(f64(got) - ref), 2 * eps(low) * np.abs(ref), err_msg=name
    )


@pytest.mark.parametrize("low", LOW_DTYPES)
def test_low_precision_gradients(low):
  all_args = {n: inputs(n, (4, 6), dtype=low) for n in NAMES}
  all_args32 = {n: [a.astype(np.float32) for a in v] for n, v in all_args.items()}

  @jax.jit
  def grads(all_args):
    out = {}
    for n, args in all_args.items():
      f = lambda *a, n=n: jnp.sum(ours(n)(*a))
      out[n] = jax.grad(f, tuple(range(len(args))))(*args)
    return out

  got, want = grads(all_args), grads(all_args32)
  for n in NAMES:
    for g, w, a in zip(got[n], want[n], all_args[n], strict=True):
      assert g.dtype == a.dtype
      np.testing.assert_allclose(
        f64(g), w, rtol=4 * eps(low), atol=4 * eps(low), err_msg=n
      )


# ---------------------------------------------------------------------------
# the bwd rules against plain autodiff


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bwd_matches_autodiff(name, dtype):
  tol = 1e-12 if dtype == "float64" else 1e-6
  with jax.enable_x64(dtype == "float64"):
    args = inputs(name, dtype=dtype)
    if name == "entropy":
      args = (probs(low=0.2, dtype=dtype),)  # plain p log p is NaN at p = 0
    for m in (None, row_mask()):
      assert_vjp_matches(ours(name, m), plain(name, m), args, rtol=tol, atol=tol)


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
      _wrong_softmax_entropy, (logits((2, 4), dtype=np.float64),), 1, ("rev",)
    )


def _check_grads_args(name):
  """float64 arguments; probabilities in [0.2, 1], away from p log p's edge."""
  rng = np.random.default_rng(3)
  shape = (2, 4)
  if name == "softmax_entropy":
    return (rng.standard_normal(shape),)
  u = lambda: rng.uniform(0.2, 1.0, shape)
  if name == "kl_divergence":
    return np.log(u()), u()
  return (u(),) if name == "entropy" else (u(), u())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "where"])
def test_check_grads_second_order(name, masked, x64):
  m = row_mask((2, 4)) if masked else None
  check_grads(jax.jit(ours(name, m)), _check_grads_args(name), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# transformations


def weighted(f):
  """A scalar of every argument, weighting each slice differently."""
  return lambda *a: jnp.sum(f(*a) * jnp.arange(1.0, 1.0 + len(a[0])))


def _regular_args(name, shape):
  """Valid arguments where plain autodiff is finite too (no p = 0)."""
  if name == "entropy":
    return (probs(shape, low=0.2),)
  return inputs(name, shape)


@pytest.mark.parametrize("name", NAMES)
def test_grad_vjp_jacrev(name):
  args = _regular_args(name, (3, 5))
  argnums = tuple(range(len(args)))
  ct = np.linspace(-1.0, 1.0, 3, dtype=np.float32)

  @jax.jit
  def all_three(*args):
    return [
      (
        jax.grad(weighted(f), argnums)(*args),
        jax.vjp(f, *args)[1](ct),
        jax.jacrev(f, argnums)(*args),
      )
      for f in (ours(name), plain(name))
    ]

  got, want = all_three(*args)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # and once eagerly
  for a, b in zip(jax.grad(weighted(ours(name)), argnums)(*args), want[0], strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_and_jacrev_jacrev(name, x64):
  args = _check_grads_args(name)
  argnums = tuple(range(len(args)))
  f, ref = weighted(ours(name)), weighted(plain(name))

  @jax.jit
  def second_derivatives(*args):
    return (
      jax.hessian(f, argnums)(*args),
      jax.jacrev(jax.jacrev(f, argnums), argnums)(*args),
      jax.hessian(ref, argnums)(*args),
    )

  h, rr, want = second_derivatives(*args)
  for a, b, c in zip(*map(jax.tree.leaves, (h, rr, want)), strict=True):
    np.testing.assert_allclose(a, c, atol=1e-12)
    np.testing.assert_allclose(b, c, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_jit_nested_vmap_checkpoint_scan(name):
  args = _regular_args(name, (2, 3, 5))
  argnums = tuple(range(len(args)))
  f = lambda *a: jnp.sum(ours(name)(*a))

  def scanned(*args):
    step = lambda c, xs: (c + jnp.sum(ours(name)(*xs)), None)
    return lax.scan(step, 0.0, args)[0]

  @jax.jit
  def everything(*args):
    return {
      "vmap2": jax.vmap(jax.vmap(ours(name)))(*args),
      "grad_checkpoint": jax.grad(jax.checkpoint(f), argnums)(*args),
      "grad_vmap2": jax.grad(
        lambda *a: jnp.sum(jax.vmap(jax.vmap(ours(name)))(*a)), argnums
      )(*args),
      "scan": scanned(*args),
      "grad_scan": jax.grad(scanned, argnums)(*args),
    }

  got = everything(*args)
  want = np_ref(name, *args)
  want_g = jax.jit(jax.grad(lambda *a: jnp.sum(plain(name)(*a)), argnums))(*args)
  np.testing.assert_allclose(got["vmap2"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["scan"], want.sum(), rtol=1e-5)
  for k in ("grad_checkpoint", "grad_vmap2", "grad_scan"):
    for g, w in zip(got[k], want_g, strict=True):
      np.testing.assert_allclose(g, w, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_is_refused(name):
  # custom_vjp has no forward-mode rule: the documented limit.
  args = inputs(name, (3,))
  tangents = tuple(np.ones_like(a) for a in args)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(ours(name), args, tangents)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jacfwd(ours(name))(*args)


@pytest.mark.parametrize("name", NAMES)
def test_vjp_is_linear_in_the_cotangent(name):
  # The bwd rule is linear in g, so the vjp of the vjp (the usual way to get a
  # jvp from a custom_vjp function) does not depend on the g it is taken at,
  # g = 0 included.
  args = _regular_args(name, (3, 5))
  tangents = tuple(np.ones_like(a) for a in args)

  @jax.jit
  def jvp_by_double_vjp(g0, *args):
    _, vjp = jax.vjp(ours(name), *args)
    return jax.vjp(vjp, g0)[1](tangents)[0]

  at0 = jvp_by_double_vjp(np.zeros(3, np.float32), *args)
  at1 = jvp_by_double_vjp(np.ones(3, np.float32), *args)
  np.testing.assert_allclose(at0, at1, rtol=1e-6)
  # and it is the jvp: the plain reference differentiated forward
  want = jax.jvp(plain(name), args, tangents)[1]
  np.testing.assert_allclose(at0, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# numerics: logits


def test_softmax_entropy_huge_logits_float32():
  z = np.array([[1e30, 1e30, -1e30, 0.0], [1e30, -1e30, 0.0, -5e29]], np.float32)
  np.testing.assert_allclose(jaxsmx.softmax_entropy(z), [np.log(2.0), 0.0], atol=1e-7)
  # a slice with a finite spread next to huge offsets keeps its exact value
  base = logits((4,)).astype(np.float64)
  zs = np.stack([base, base + 1e30, base - 1e30, base + 3e38]).astype(np.float32)
  h = jaxsmx.softmax_entropy(zs)
  np.testing.assert_allclose(h[0], np_ref("softmax_entropy", base), rtol=1e-6)
  assert np.all(np.isfinite(h))

  @jax.jit
  def grads(z, zs):
    f = lambda z: jnp.sum(jaxsmx.softmax_entropy(z) * jnp.arange(1.0, 1.0 + len(z)))
    return jax.grad(f)(z), jax.grad(f)(zs)

  g, gs = grads(z, zs)
  np.testing.assert_array_equal(g, 0.0)  # the closed form: -a (log a + H) = 0
  assert np.all(np.isfinite(gs))


def test_softmax_entropy_minus_inf_logits(transform):
  z = logits((3, 6))
  z[:, 2] = z[1, 4] = -np.inf
  finite = np.isfinite(z)
  h = transform(jaxsmx.softmax_entropy)(z)
  np.testing.assert_allclose(h, torch_entropy(z), rtol=1e-6)
  # each slice equals the slice without its -inf logits
  for i in range(3):
    np.testing.assert_allclose(
      h[i], np_ref("softmax_entropy", z[i][finite[i]]), rtol=1e-6
    )


def test_softmax_entropy_minus_inf_gradients():
  z = logits((3, 6))
  z[:, 2] = z[1, 4] = -np.inf
  finite = np.isfinite(z)
  # the naive formula is NaN in value and gradient; jaxsmx is finite
  naive = lambda z: -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), -1)
  f = lambda z: jnp.sum(jaxsmx.softmax_entropy(z) * jnp.arange(1.0, 4.0))
  nv, ng, g = jax.jit(
    lambda z: (naive(z), jax.grad(lambda z: naive(z).sum())(z), jax.grad(f)(z))
  )(z)
  assert np.all(np.isnan(nv)) and np.all(np.isnan(ng))
  g = np.asarray(g)
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(g[~finite], 0.0)
  # the gradient of each slice is the gradient of the slice without its -inf
  for i in range(3):
    zi = z[i][finite[i]]
    gi = (i + 1.0) * jax.grad(plain("softmax_entropy"))(zi)
    np.testing.assert_allclose(g[i][finite[i]], gi, atol=1e-6)


def test_empty_slices_are_zero(transform):
  # a fully masked slice (every function) and an all -inf slice
  # (softmax_entropy) give 0
  m = row_mask()
  m[2] = False
  all_args = {n: inputs(n) for n in NAMES}
  z = logits()
  z[3] = -np.inf

  def all_of_them(m, all_args, z):
    out = {n: ours(n, m)(*args) for n, args in all_args.items()}
    out["all_minus_inf"] = jaxsmx.softmax_entropy(z)
    return out

  got = transform(all_of_them)(m, all_args, z) if transform is not jax.vmap else None
  if got is None:  # vmap over rows: the mask and the logits have one row each
    got = {
      n: jax.vmap(lambda m, *a, n=n: ours(n, m)(*a))(m, *all_args[n]) for n in NAMES
    }
    got["all_minus_inf"] = jax.vmap(jaxsmx.softmax_entropy)(z)
  for n in NAMES:
    h = np.asarray(got[n])
    assert h[2] == 0.0, n
    np.testing.assert_allclose(
      np.delete(h, 2), np.delete(np.asarray(ours(n, m)(*all_args[n])), 2), rtol=1e-6
    )
  h = np.asarray(got["all_minus_inf"])
  assert h[3] == 0.0
  np.testing.assert_allclose(
    np.delete(h, 3), np_ref("softmax_entropy", np.delete(z, 3, axis=0)), rtol=1e-6
  )


def test_zero_size_class_axis_is_zero():
  for name in NAMES:
    args = inputs(name, (3, 0))
    np.testing.assert_array_equal(ours(name)(*args), np.zeros(3), err_msg=name)


def test_empty_slices_have_zero_gradient():
  m = row_mask()
  m[2] = False
  all_args = {n: inputs(n) for n in NAMES}
  z = logits()
  z[3] = -np.inf

  @jax.jit
  def grads(all_args, z):
    out = {}
    for n, args in all_args.items():
      f = lambda *a, n=n: jnp.sum(ours(n, m)(*a))
      out[n] = jax.grad(f, tuple(range(len(args))))(*args)
    out["all_minus_inf"] = jax.grad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z)))(z)
    return out

  got = grads(all_args, z)
  for n in NAMES:
    for g in got[n]:
      np.testing.assert_array_equal(g[2], 0.0, err_msg=n)
      assert np.all(np.isfinite(g)), n
  np.testing.assert_array_equal(got["all_minus_inf"][3], 0.0)
  assert np.all(np.isfinite(got["all_minus_inf"]))


def _poisoned(bad):
  """(name, k, args): every function with `bad` at [1, 3] of argument k."""
  for name in NAMES:
    for k in range(len(inputs(name))):
      args = list(inputs(name))
      args[k][1, 3] = bad
      yield name, k, args


def test_nan_poisons_only_its_slice(transform):
  for name, k, args in _poisoned(np.nan):
    want = np.asarray(ours(name)(*inputs(name)))
    got = np.asarray(transform(ours(name))(*args))
    assert np.isnan(got[1]), (name, k)
    np.testing.assert_allclose(np.delete(got, 1), np.delete(want, 1), rtol=1e-6)


def test_nan_gradients_stay_in_their_slice():
  cases = list(_poisoned(np.nan))

  names = [n for n, _, _ in cases]

  def grads(all_args):
    out = []
    for n, args in zip(names, all_args, strict=True):
      f = lambda *a, n=n: jnp.sum(ours(n)(*a))
      out.append(jax.grad(f, tuple(range(len(args))))(*args))
    return out

  grads = jax.jit(grads)
  want = grads([inputs(n) for n in names])
  got = grads([a for _, _, a in cases])
  for (name, k, _), gs, ws in zip(cases, got, want, strict=True):
    for g, w in zip(gs, ws, strict=True):
      np.testing.assert_allclose(
        np.delete(np.asarray(g), 1, axis=0),
        np.delete(np.asarray(w), 1, axis=0),
        atol=1e-6,
        err_msg=f"{name} argument {k}",
      )


@pytest.mark.parametrize("name", TWO_ARGS)
def test_nan_is_not_hidden_by_a_zero_weight(name):
  # p = 0 (or t = 0) gives a 0 term, but a NaN partner must still show.
  a, b = inputs(name)
  if name == "cross_entropy":
    a[1, 3], b[1, 3] = 0.0, np.nan
  else:
    a[1, 3], b[1, 3] = np.nan, 0.0
  got = np.asarray(ours(name)(a, b))
  assert np.isnan(got[1]) and np.all(np.isfinite(np.delete(got, 1)))


def test_plus_inf_logit_poisons_only_its_slice(transform):
  z = logits((3, 5))
  z[1, 3] = np.inf
  got = np.asarray(transform(jaxsmx.softmax_entropy)(z))
  assert np.isnan(got[1])
  np.testing.assert_allclose(
    got[[0, 2]], np_ref("softmax_entropy", z[[0, 2]]), rtol=1e-6
  )
  g = np.asarray(jgrad(lambda z: jnp.sum(jaxsmx.softmax_entropy(z)))(z))
  assert np.all(np.isnan(g[1])) and np.all(np.isfinite(g[[0, 2]]))


def test_plus_inf_probability_is_not_hidden():
  # +inf is no probability; entropy follows scipy.special.entr (-inf), never 0.
  p = probs((3, 5))
  p[1, 3] = np.inf
  got = np.asarray(jaxsmx.entropy(p))
  np.testing.assert_allclose(got, scipy.special.entr(f64(p)).sum(-1), rtol=1e-6)
  assert np.isneginf(got[1])


# ---------------------------------------------------------------------------
# numerics: zero probabilities


def test_entropy_zero_probability():
  p = np.array([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8]], np.float32)
  np.testing.assert_allclose(
    jaxsmx.entropy(p), scipy.special.entr(f64(p)).sum(-1), rtol=1e-6
  )
  g, g_row1 = jax.jit(
    lambda p: (
      jax.grad(lambda p: jaxsmx.entropy(p).sum())(p),
      jax.grad(lambda p: jaxsmx.entropy(p)[1])(p),
    )
  )(p)
  g = np.asarray(g)
  assert not np.any(np.isnan(g))
  assert np.isposinf(g[0, 2]) and np.isposinf(g[1, 1])  # -(log 0 + 1): documented
  np.testing.assert_allclose(g[0, :2], -(np.log(0.5) + 1.0), rtol=1e-6)
  # a slice that does not reach the output gets 0, not 0 * inf = NaN
  np.testing.assert_array_equal(g_row1[0], 0.0)


def test_cross_entropy_zero_probability():
  p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]], np.float32)
  q = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], np.float32)
  h = np.asarray(jaxsmx.cross_entropy(p, q))
  np.testing.assert_allclose(h[:2], [np.log(2.0), np.log(4.0)], rtol=1e-6)
  assert np.isposinf(h[2])  # p > 0 = q
  f = lambda p, q: jaxsmx.cross_entropy(p, q)[:2].sum()
  gp, gq = jgrad(f, (0, 1))(p, q)
  assert not np.any(np.isnan(gp)) and not np.any(np.isnan(gq))
  assert gq[0, 2] == 0.0  # p = 0: the term is 0 whatever q is
  assert np.isposinf(gp[0, 2])  # -log q at q = 0: documented
  np.testing.assert_allclose(gq[1, 2], 0.0)
  np.testing.assert_allclose(gp[1, 2], -np.log(0.5), rtol=1e-6)
  np.testing.assert_array_equal(gp[2], 0.0)
  np.testing.assert_array_equal(gq[2], 0.0)


def test_kl_divergence_zero_target_gradients_vs_optax():
  lq = np.log(np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 1.0]], np.float32))
  lq[1, 2] = -np.inf  # q = 0
  t = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], np.float32)
  d = np.asarray(jaxsmx.kl_divergence(lq, t))
  np.testing.assert_allclose(d, [0.5 * np.log(2.0), 0.0], atol=1e-7)
  # optax: NaN value where t = 0 and log q = -inf, NaN gradient at every t = 0
  assert np.isnan(optax.losses.kl_divergence(lq, t)[1])
  g_optax = jax.grad(lambda t: optax.losses.kl_divergence(lq, t)[0])(t)
  assert np.isnan(g_optax[0, 2])
  # jaxsmx: never NaN; d/dt at t = 0 is the one-sided -inf (+inf with log q = -inf)
  glq, gt = jgrad(lambda lq, t: jaxsmx.kl_divergence(lq, t).sum(), (0, 1))(lq, t)
  assert not np.any(np.isnan(glq)) and not np.any(np.isnan(gt))
  assert np.isneginf(gt[0, 2]) and np.isposinf(gt[1, 2])
  np.testing.assert_allclose(glq, -t)
  np.testing.assert_allclose(
    gt[0, :2], np.log([0.5, 0.5]) + 1 - np.log([0.5, 0.25]), rtol=1e-6
  )


# ---------------------------------------------------------------------------
# second order at the edges


def test_softmax_entropy_second_order_at_the_edges(x64):
  # -inf logits, an all -inf row and masked entries: the second derivatives
  # are those of the slices without them, 0 elsewhere, never NaN, by
  # reverse-over-reverse and forward-over-reverse alike.
  z = logits((3, 5), dtype=np.float64)
  m = np.ones((3, 5), bool)
  z[0, 1] = -np.inf
  z[1] = -np.inf
  m[2, 3] = False
  f = weighted(ours("softmax_entropy", m))

  @jax.jit
  def second(z):
    return jax.jacrev(jax.jacrev(f))(z), jax.hessian(f)(z)

  rr, fr = (np.asarray(h).reshape(15, 15) for h in second(z))
  assert not np.any(np.isnan(rr)) and not np.any(np.isnan(fr))
  np.testing.assert_allclose(rr, fr, atol=1e-12)
  for row, keep in ((0, [0, 2, 3, 4]), (2, [0, 1, 2, 4])):
    idx = [5 * row + k for k in keep]
    h = (row + 1.0) * jax.jit(jax.hessian(plain("softmax_entropy")))(z[row, keep])
    np.testing.assert_allclose(rr[np.ix_(idx, idx)], h, atol=1e-12)
    rest = np.setdiff1d(np.arange(15), idx)
    np.testing.assert_array_equal(rr[np.ix_(idx, rest)], 0.0)
  np.testing.assert_array_equal(rr[5:10], 0.0)


@pytest.mark.parametrize("name", ("entropy", "cross_entropy", "kl_divergence"))
def test_masked_zeros_second_order(name, x64):
  # Masked entries that hold 0 (or NaN) are left out of second derivatives
  # too: the Hessian is the one of the unmasked entries, 0 elsewhere.
  args = [np.array(a) for a in _check_grads_args(name)]
  m = np.ones((2, 4), bool)
  m[0, 1] = m[1, 2] = False
  for a in args:
    a[~m] = 0.0
  args[-1][0, 1] = np.nan
  argnums = tuple(range(len(args)))
  f = weighted(ours(name, m))
  ref = weighted(plain(name, m))

  @jax.jit
  def second(*args):
    return jax.jacrev(jax.jacrev(f, argnums), argnums)(*args), jax.hessian(f, argnums)(
      *args
    )

  rr, fr = second(*args)
  safe = [np.where(m, a, 0.5) for a in args]  # plain autodiff needs finite logs
  want = jax.jit(jax.hessian(ref, argnums))(*safe)
  for a, b, c in zip(*map(jax.tree.leaves, (rr, fr, want)), strict=True):
    assert not np.any(np.isnan(a)) and not np.any(np.isnan(b))
    np.testing.assert_allclose(a, c, atol=1e-12)
    np.testing.assert_allclose(b, c, atol=1e-12)


def test_cross_entropy_second_order_at_zero_p(x64):
  # -p log q is smooth at p = 0 when q > 0: d2/dp dq = -1/q there, as plain
  # autodiff says (a where that zeroes d/dq at p = 0 would lose it).
  p, q = _check_grads_args("cross_entropy")
  p = np.array(p)
  p[0, 1] = p[1, 3] = 0.0
  f, ref = weighted(ours("cross_entropy")), weighted(plain("cross_entropy"))

  @jax.jit
  def second(p, q):
    return (
      jax.jacrev(jax.jacrev(f, (0, 1)), (0, 1))(p, q),
      jax.hessian(f, (0, 1))(p, q),
      jax.hessian(ref, (0, 1))(p, q),
    )

  rr, fr, want = second(p, q)
  for a, b, c in zip(*map(jax.tree.leaves, (rr, fr, want)), strict=True):
    np.testing.assert_allclose(a, c, atol=1e-12)
    np.testing.assert_allclose(b, c, atol=1e-12)


# ---------------------------------------------------------------------------
# properties


def _distribution(n):
  return (
    hnp.arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)))
    .filter(lambda w: w.sum() > 0)
    .map(lambda w: w / w.sum())
  )


@jax.jit
def _information(p, q):
  return (
    jaxsmx.entropy(p),
    jaxsmx.cross_entropy(p, q),
    jaxsmx.kl_divergence(jnp.log(q), p),
    jaxsmx.cross_entropy(p, p),
  )


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.sampled_from([2, 5]))
def test_gibbs_inequality_and_kl_nonnegative(data, n):
  p = data.draw(_distribution(n))
  q = data.draw(_distribution(n))
  with jax.enable_x64(True):
    hp, hpq, kl, hpp = (float(v) for v in _information(p, q))
  assert hpq >= hp - 1e-12
  assert kl >= -1e-12
  if np.isfinite(hpq):
    np.testing.assert_allclose(kl, hpq - hp, atol=1e-10)
  else:
    assert kl == np.inf
  np.testing.assert_allclose(hpp, hp, atol=1e-12)


_softmax_entropy = jax.jit(jaxsmx.softmax_entropy)


@settings(max_examples=30, deadline=None)
@given(z=hnp.arrays(np.float32, 5, elements=st.floats(-30, 30, width=32)))
def test_softmax_entropy_is_between_zero_and_log_c(z):
  h = float(_softmax_entropy(z))
  assert -1e-6 <= h <= np.log(5.0) + 1e-6


# ---------------------------------------------------------------------------
# structure: where is slicing, axis is moveaxis


@pytest.mark.parametrize("name", NAMES)
def test_where_equals_slicing(name):
  args, m = inputs(name), row_mask()
  argnums = tuple(range(1, len(args) + 1))
  f = lambda m, *a: jnp.sum(ours(name, m)(*a))
  got = ours(name, m)(*args)
  gs = jgrad(f, argnums)(m, *args)
  for i in range(2):
    sliced = [a[i][m[i]] for a in args]
    np.testing.assert_allclose(got[i], np_ref(name, *sliced), rtol=1e-6)
    want = jgrad(f, argnums)(None, *sliced)
    for g, w in zip(gs, want, strict=True):
      np.testing.assert_allclose(g[i][m[i]], w, atol=1e-6)
      np.testing.assert_array_equal(g[i][~m[i]], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_per_row_where_selects_slices(name):
  args = inputs(name)
  rows = np.array([True, False, True, True, False])
  got = np.asarray(ours(name, rows[:, None])(*args))
  np.testing.assert_array_equal(got[~rows], 0.0)
  np.testing.assert_allclose(
    got[rows], np_ref(name, *[a[rows] for a in args]), rtol=1e-6
  )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(5, 7), (7, 7)], ids=["B!=C", "B=C"])
def test_class_mask_broadcasts_as_numpy(name, shape):
  # a (C,) mask masks classes in every slice, as np.sum(x, where=m) and
  # optax.losses.kl_divergence read it; it is never one flag per example
  args = inputs(name, shape)
  classes = np.array([True, False, True, True, False, True, True])
  got = ours(name, classes)(*args)
  want = np_ref(name, *[a[:, classes] for a in args])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  if name == "kl_divergence":
    np.testing.assert_allclose(
      got, optax.losses.kl_divergence(*args, where=classes), rtol=1e-6
    )


def test_kl_divergence_where_axis_dtype_match_optax():
  lq, t = inputs("kl_divergence", (3, 4, 5))
  m = row_mask((3, 4, 5))
  for kw in ({"axis": None}, {"axis": (0, 2)}, {"axis": 1, "where": m}):
    got = jaxsmx.kl_divergence(lq, t, **kw)
    want = optax.losses.kl_divergence(lq, t, **kw)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
  for a, b in (
    ("bfloat16", "float32"),
    ("float32", "bfloat16"),
    ("bfloat16", "float16"),
  ):
    x, y = jnp.asarray(lq, a), jnp.asarray(t, b)
    got, want = jaxsmx.kl_divergence(x, y), optax.losses.kl_divergence(x, y)
    assert got.dtype == want.dtype, (a, b, got.dtype, want.dtype)


@pytest.mark.parametrize("name", TWO_ARGS)
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("shape", [(7,), (1, 7)])
def test_inputs_broadcast_as_numpy(name, which, shape):
  # one distribution for a whole batch, as optax (and NumPy) broadcast it
  f = getattr(jaxsmx, name)
  args = list(inputs(name, (4, 7)))
  args[which] = args[which][0].reshape(shape)
  full = [jnp.broadcast_to(a, (4, 7)) for a in args]
  np.testing.assert_allclose(f(*args), np_ref(name, *full), rtol=1e-6)
  # the broadcast input's gradient is the full one summed over the batch
  grads = jgrad(lambda x, y: f(x, y).sum(), (0, 1))(*args)
  full_grads = jgrad(lambda x, y: f(x, y).sum(), (0, 1))(*full)
  assert grads[which].shape == shape
  np.testing.assert_allclose(
    grads[which], full_grads[which].sum(0).reshape(shape), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(grads[1 - which], full_grads[1 - which], rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_axis_equals_moveaxis(name):
  args = inputs(name, (3, 4, 5))
  for k in (0, 1):
    got = ours(name, axis=k)(*args)
    want = ours(name)(*[np.moveaxis(a, k, -1) for a in args])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_tuple_axes_equal_reshape(name):
  args = inputs(name, (2, 3, 4, 5))
  got = ours(name, axis=(1, 3))(*args)
  flat = [np.moveaxis(a, (1, 3), (2, 3)).reshape(2, 4, 15) for a in args]
  np.testing.assert_allclose(got, np_ref(name, *flat), rtol=1e-6)
  np.testing.assert_allclose(ours(name, axis=(3, 1))(*args), got, rtol=1e-6)
  # to the last bit, in value and gradients
  np.testing.assert_array_equal(got, ours(name)(*flat))
  argnums = tuple(range(len(args)))
  grads = jgrad(lambda *a: jnp.sum(ours(name, axis=(1, 3))(*a)), argnums)(*args)
  flat_grads = jgrad(lambda *a: jnp.sum(ours(name)(*a)), argnums)(*flat)
  for g, gf in zip(grads, flat_grads, strict=True):
    back = np.moveaxis(np.asarray(gf).reshape(2, 4, 3, 5), (2, 3), (1, 3))
    np.testing.assert_array_equal(g, back)


def test_zero_probabilities_keep_debug_tools_quiet():
  # a zero probability is an ordinary input (the value is finite): neither
  # jax.debug_nans nor checkify.float_checks may see a NaN, in value or
  # gradient, and the gradient has none either
  from jax.experimental import checkify

  p = np.array([[0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]], np.float32)
  q = np.array([[0.25, 0.0, 0.75, 0.0], [0.5, 0.5, 0.0, 0.0]], np.float32)
  lq = np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), -np.inf).astype(np.float32)
  m = np.array([True, True, False, True])
  cases = {
    "entropy": (jaxsmx.entropy, (p,)),
    "cross_entropy": (jaxsmx.cross_entropy, (p * (q > 0), q)),
    "kl_divergence": (jaxsmx.kl_divergence, (lq, p * (q > 0))),
    "kl_divergence[where]": (lambda a, b: jaxsmx.kl_divergence(a, b, where=m), (lq, p)),
    "softmax_entropy": (jaxsmx.softmax_entropy, (lq,)),
  }
  for name, (f, args) in cases.items():
    argnums = tuple(range(len(args)))
    loss = lambda *a, f=f: jnp.sum(f(*a))
    vg = jax.value_and_grad(loss, argnums)
    value, grads = jax.jit(vg)(*args)
    assert np.isfinite(value), name
    assert not any(np.any(np.isnan(g)) for g in grads), name
    with jax.debug_nans(True):
      jax.jit(vg)(*args)
      with jax.disable_jit():
        vg(*args)
    for fn in (loss, vg):
      err, _ = jax.jit(checkify.checkify(fn, errors=checkify.float_checks))(*args)
      assert err.get() is None, (name, err.get())


def test_the_debug_tools_catch_optax_kl_at_a_zero_target():
  # the check above can fail: optax's kl_divergence forms 0 * -inf
  from jax.experimental import checkify

  lq = np.log(np.array([0.5, 0.25, 0.25], np.float32))
  t = np.array([0.5, 0.5, 0.0], np.float32)
  err, _ = checkify.checkify(
    jax.grad(lambda t: optax.losses.kl_divergence(lq, t)), errors=checkify.float_checks
  )(t)
  assert err.get() is not None
  with jax.debug_nans(True), pytest.raises(FloatingPointError):
    jax.grad(lambda t: optax.losses.kl_divergence(lq, t))(t)


@pytest.mark.parametrize("name", TWO_ARGS)
@pytest.mark.parametrize(
  ("first", "second"),
  [("bfloat16", "float32"), ("float32", "bfloat16"), ("float16", "bfloat16")],
)
def test_mixed_dtypes(name, first, second):
  # the result in the promoted dtype (optax's for kl_divergence); each
  # gradient in its input's dtype, computed in float32 and rounded once: never
  # through the other input's dtype
  a, b = inputs(name, (4, 7))
  a, b = jnp.asarray(a, first), jnp.asarray(b, second)
  f = getattr(jaxsmx, name)
  out = f(a, b)
  assert out.dtype == jnp.result_type(a, b)
  np.testing.assert_allclose(f64(out), np_ref(name, a, b), rtol=2 * eps(out.dtype))
  ga, gb = jax.grad(lambda a, b: f(a, b).sum(), (0, 1))(a, b)
  assert ga.dtype == a.dtype and gb.dtype == b.dtype
  with jax.enable_x64(True):
    want = jax.grad(lambda a, b: f(a, b).sum(), (0, 1))(f64(a), f64(b))
  # half an ulp of a 16-bit dtype; float32 is 1e-6 (a rounding through
  # bfloat16 would be 4e-3)
  for g, w, x in ((ga, want[0], a), (gb, want[1], b)):
    tol = eps(x.dtype) / 2 if x.dtype != jnp.float32 else 1e-6
    np.testing.assert_allclose(f64(g), w, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_an_eager_call_is_one_compiled_call(name):
  args, m = inputs(name), row_mask()
  for f in (ours(name), ours(name, m)):
    eqns = jax.make_jaxpr(f)(*args).eqns
    assert [e.primitive.name for e in eqns] == ["jit"], eqns


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name):
  f = getattr(jaxsmx, name)
  args = inputs(name, (4, 7))
  for k in range(len(args)):
    bad = list(args)
    bad[k] = np.ones((4, 7), np.complex64)  # integers are promoted, as in jax.nn
    with pytest.raises(TypeError, match=r"must be real .*; got complex64"):
      f(*bad)
  with pytest.raises(ValueError, match=r"axis 2 is out of range .* rank 2"):
    f(*args, axis=2)
  with pytest.raises(ValueError, match=r"names the same axis twice"):
    f(*args, axis=(0, -2))
  with pytest.raises(
    TypeError, match=r"where must be a boolean mask; got dtype float32"
  ):
    f(*args, where=np.ones((4, 7), np.float32))
  with pytest.raises(
    ValueError, match=r"broadcast to the input's shape \(4, 7\).*got \(3,\)"
  ):
    f(*args, where=np.ones(3, bool))
  with pytest.raises(ValueError, match=r"got \(4, 6\)"):
    f(*args, where=np.ones((4, 6), bool))
  # a per-example mask must say so: the message shows how
  with pytest.raises(
    ValueError, match=r"got \(4,\)\..*jnp.expand_dims\(where, \(1,\)\)"
  ):
    f(*args, where=np.ones(4, bool))


@pytest.mark.parametrize("name", TWO_ARGS)
def test_shape_mismatch_shows_both_shapes(name):
  a, b = inputs(name, (4, 7))
  first, second = (
    ("p", "q") if name == "cross_entropy" else ("log_predictions", "targets")
  )
  msg = rf"broadcast against each other.*{first} \(4, 7\), {second} \(6,\)"
  with pytest.raises(ValueError, match=msg):
    getattr(jaxsmx, name)(a, b[0, :6])


# ---------------------------------------------------------------------------
# docstring examples


@pytest.mark.parametrize("module", [jaxsmx._entropy, jaxsmx._kl])
def test_doctests(module):
  result = doctest.testmod(module)
  assert result.attempted > 0
  assert result.failed == 0
