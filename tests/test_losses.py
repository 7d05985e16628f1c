"""Tests for the three cross-entropy losses on logits (jaxsmx/_soft_labels.py,
_integer_labels.py, _sigmoid.py).

Each loss is checked against optax, torch and a float64 NumPy formula; each
closed-form bwd against jax.vjp of a plain autodiff reference; and each edge
of issue 2 (infinities, masks, bad labels, 16-bit inputs) has its own test.
"""

import contextlib
import doctest
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from conftest import assert_vjp_matches, f64, np_log_softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxsmx
from jaxsmx import _integer_labels, _sigmoid, _soft_labels

sce = jaxsmx.softmax_cross_entropy
ice = jaxsmx.softmax_cross_entropy_with_integer_labels
bce = jaxsmx.sigmoid_binary_cross_entropy

INF = np.inf
TOL = {np.float32: 1e-6, np.float64: 1e-12}
HYPOTHESIS = settings(max_examples=30, deadline=None)


def tols(dtype):
  """The issue's bwd tolerance: 1e-6 in float32, 1e-12 in float64."""
  return {"rtol": TOL[dtype], "atol": TOL[dtype]}


# ---------------------------------------------------------------------------
# helpers: plain autodiff references, float64 NumPy references, comparisons


def x64(dtype=np.float64):
  """A context with jax_enable_x64 on for float64, left alone otherwise."""
  if np.dtype(dtype) == np.float64:
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def rng(seed=0):
  return np.random.default_rng(seed)


def ref_sce(z, y, axis=-1):
  """Plain autodiff soft-label CE (no mask, finite logits)."""
  return -jnp.sum(y * jax.nn.log_softmax(z, axis), axis)


def ref_ice(z, c, axis=-1):
  """Plain autodiff integer-label CE over one axis."""
  lp = jax.nn.log_softmax(z, axis)
  return -jnp.take_along_axis(lp, jnp.expand_dims(c, axis), axis).squeeze(axis)


def ref_ice_smooth(z, c, alpha):
  """torch's label smoothing, as plain autodiff."""
  lp = jax.nn.log_softmax(z, -1)
  nll = -jnp.take_along_axis(lp, c[..., None], -1)[..., 0]
  return (1 - alpha) * nll - alpha * jnp.mean(lp, -1)


def ref_bce(z, y):
  """Plain autodiff sigmoid BCE (finite logits)."""
  return -y * jax.nn.log_sigmoid(z) - (1 - y) * jax.nn.log_sigmoid(-z)


def np_sce(z, y, axis=-1):
  """float64 NumPy reference for the soft-label loss."""
  y = np.asarray(y, np.float64)
  return -np.sum(y * np_log_softmax(z, axis), axis)


def np_ice(z, c):
  lp = np_log_softmax(z)
  return -np.take_along_axis(lp, np.asarray(c)[..., None], -1)[..., 0]


def np_bce(z, y):
  z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
  return np.logaddexp(0, z) - y * z


def logits(shape, dtype=np.float32, seed=0, scale=2.0):
  return jnp.asarray(rng(seed).normal(size=shape) * scale, dtype)


def soft_labels(shape, dtype=np.float32, seed=1):
  p = rng(seed).dirichlet(np.ones(shape[-1]), size=shape[:-1])
  return jnp.asarray(p, dtype)


def int_labels(shape, num_classes, seed=2):
  return jnp.asarray(rng(seed).integers(0, num_classes, size=shape), jnp.int32)


def grad_of_sum(f, argnums=0):
  """jax.grad of the summed per-example loss."""
  return jax.grad(lambda *a, **kw: jnp.sum(f(*a, **kw)), argnums)


def all_finite(x):
  return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


# ---------------------------------------------------------------------------
# references: optax and torch


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_softmax_cross_entropy_matches_optax_and_smooth_labels(alpha):
  z, y = logits((4, 6)), soft_labels((4, 6))
  want = optax.losses.softmax_cross_entropy(z, optax.smooth_labels(y, alpha))
  np.testing.assert_allclose(sce(z, y, label_smoothing=alpha), want, rtol=1e-6)


def test_softmax_cross_entropy_matches_optax_axis_and_row_where():
  z, y = logits((3, 5, 4)), soft_labels((3, 4, 5)).transpose(0, 2, 1)
  where = jnp.array([[True, False, True, True]] * 3)
  want = optax.losses.softmax_cross_entropy(z, y, axis=1, where=where)
  got = sce(z, y, axis=1, where=where)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(got)[:, 1] == 0)


@pytest.mark.parametrize("axis", [(2, 3), (3, 2), (1, 3), -1, 1])
def test_integer_labels_match_optax_axes(axis):
  z = logits((2, 3, 4, 5))
  axes = (axis,) if isinstance(axis, int) else axis
  axes = tuple(a % 4 for a in axes)
  batch = tuple(d for i, d in enumerate(z.shape) if i not in axes)
  c = int_labels(batch, math.prod(z.shape[a] for a in axes))
  want = optax.losses.softmax_cross_entropy_with_integer_labels(z, c, axis=axis)
  # optax's lse - z_c has absolute error ~eps * lse; ours is nearer float64
  got = ice(z, c, axis=axis)
  np.testing.assert_allclose(got, want, **tols(np.float32))
  moved = jnp.moveaxis(z, axes, range(z.ndim - len(axes), z.ndim))
  flat = moved.reshape((*batch, -1))
  np.testing.assert_allclose(got, np_ice(flat, c), rtol=1e-6)


@pytest.mark.parametrize("axis", [(2, 3), (3, 2), -1])
def test_integer_labels_match_optax_per_row_where(axis):
  z = logits((2, 3, 4, 5))
  axes = (axis,) if isinstance(axis, int) else axis
  axes = tuple(a % 4 for a in axes)
  batch = tuple(d for i, d in enumerate(z.shape) if i not in axes)
  c = int_labels(batch, math.prod(z.shape[a] for a in axes))
  where = jnp.asarray(rng(5).random(batch) > 0.4)
  assert where.ndim == z.ndim - len(axes)
  want = optax.losses.softmax_cross_entropy_with_integer_labels(
    z, c, axis=axis, where=where
  )
  got = ice(z, c, axis=axis, where=where)
  np.testing.assert_allclose(got, want, **tols(np.float32))
  assert np.all(np.asarray(got)[~np.asarray(where)] == 0)


def test_integer_labels_tuple_axes_flat_index_is_c_order_in_given_order():
  z = logits((2, 3, 4))
  c = jnp.array([5, 11])  # flat index into logits[b] moved to the given order
  moved = jnp.moveaxis(z, (2, 1), (1, 2)).reshape(2, 12)
  np.testing.assert_allclose(ice(z, c, axis=(2, 1)), ref_ice(moved, c), rtol=1e-6)
  flat = z.reshape(2, 12)
  np.testing.assert_allclose(ice(z, c, axis=(1, 2)), ref_ice(flat, c), rtol=1e-6)


def test_sigmoid_binary_cross_entropy_matches_optax():
  z = logits((3, 7), scale=4.0)
  y = jnp.asarray(rng(3).random((3, 7)), jnp.float32)
  want = optax.losses.sigmoid_binary_cross_entropy(z, y)
  np.testing.assert_allclose(bce(z, y), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(bce(z, y), np_bce(z, y), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [None, -100, 1])
def test_integer_labels_match_torch(alpha, ignore_index):
  torch = pytest.importorskip("torch")
  z = logits((6, 5))
  c = np.array(int_labels((6,), 5))
  if ignore_index is not None:
    c[[0, 3]] = ignore_index
  kw = {} if ignore_index is None else {"ignore_index": ignore_index}
  want = torch.nn.functional.cross_entropy(
    torch.tensor(np.asarray(z)),
    torch.tensor(c, dtype=torch.long),
    reduction="none",
    label_smoothing=alpha,
    **kw,
  )
  got = ice(z, jnp.asarray(c), label_smoothing=alpha, ignore_index=ignore_index)
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_soft_labels_match_torch(alpha):
  torch = pytest.importorskip("torch")
  z, y = logits((4, 5)), soft_labels((4, 5))
  want = torch.nn.functional.cross_entropy(
    torch.tensor(np.asarray(z)),
    torch.tensor(np.asarray(y)),
    reduction="none",
    label_smoothing=alpha,
  )
  got = sce(z, y, label_smoothing=alpha)
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_integer_labels_torch_gradients_with_ignore_index():
  torch = pytest.importorskip("torch")
  z = logits((5, 4))
  c = np.array([0, -100, 3, 2, -100])
  zt = torch.tensor(np.asarray(z), requires_grad=True)
  loss = torch.nn.functional.cross_entropy(
    zt, torch.tensor(c), reduction="none", label_smoothing=0.1
  )
  loss.sum().backward()
  got = jax.grad(
    lambda z: ice(z, jnp.asarray(c), label_smoothing=0.1, ignore_index=-100).sum()
  )(z)
  np.testing.assert_allclose(got, zt.grad.numpy(), rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(got)[[1, 4]] == 0)


# ---------------------------------------------------------------------------
# closed-form bwd against jax.vjp of the autodiff reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_ce_vjp_matches_autodiff(dtype):
  with x64(dtype):
    z, y = logits((4, 6), dtype), soft_labels((4, 6), dtype)
    assert_vjp_matches(sce, ref_sce, (z, y), **tols(dtype))
    # unnormalised labels: the general a * sum(y) - y
    y2 = jnp.asarray(rng(7).random((4, 6)) * 3, dtype)
    assert_vjp_matches(sce, ref_sce, (z, y2), **tols(dtype))
    smooth = lambda z, y: sce(z, y, label_smoothing=0.25)
    ref = lambda z, y: ref_sce(z, optax.smooth_labels(y, 0.25))
    assert_vjp_matches(smooth, ref, (z, y), **tols(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_ce_vjp_matches_autodiff_masked_and_axis(dtype):
  with x64(dtype):
    z, y = logits((3, 5, 2), dtype), soft_labels((3, 2, 5), dtype)
    y = y.transpose(0, 2, 1)
    assert_vjp_matches(
      lambda z, y: sce(z, y, axis=1),
      lambda z, y: ref_sce(z, y, 1),
      (z, y),
      **tols(dtype),
    )
    mask = jnp.asarray(rng(4).random((3, 5, 2)) > 0.3).at[:, 0].set(True)

    def ref(z, y):
      lp = jnp.where(mask, jax.nn.log_softmax(z, 1, where=mask), 0.0)
      return -jnp.sum(jnp.where(mask, y * lp, 0.0), 1)

    assert_vjp_matches(
      lambda z, y: sce(z, y, axis=1, where=mask), ref, (z, y), **tols(dtype)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_integer_ce_vjp_matches_autodiff(dtype, alpha):
  with x64(dtype):
    z, c = logits((5, 7), dtype), int_labels((5,), 7)
    assert_vjp_matches(
      lambda z: ice(z, c, label_smoothing=alpha),
      lambda z: ref_ice_smooth(z, c, alpha),
      (z,),
      **tols(dtype),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_ce_vjp_matches_autodiff_tuple_axes_and_class_mask(dtype):
  with x64(dtype):
    z = logits((2, 3, 4), dtype)
    c = jnp.array([[1, 7, 10], [11, 0, 4]])[:, 0]  # flat labels over (1, 2)
    flat = lambda z: ref_ice(z.reshape(2, 12), c)
    assert_vjp_matches(lambda z: ice(z, c, axis=(1, 2)), flat, (z,), **tols(dtype))
    z2, c2 = logits((4, 6), dtype), jnp.array([0, 2, 3, 5])
    mask = jnp.array([[True, False, True, True, False, True]] * 4)

    def ref(z):
      lp = jnp.where(mask, jax.nn.log_softmax(z, -1, where=mask), 0.0)
      return -jnp.take_along_axis(lp, c2[:, None], -1)[:, 0]

    assert_vjp_matches(lambda z: ice(z, c2, where=mask), ref, (z2,), **tols(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_vjp_matches_autodiff(dtype):
  with x64(dtype):
    z = logits((3, 4), dtype, scale=3.0)
    y = jnp.asarray(rng(3).random((3, 4)), dtype)
    assert_vjp_matches(bce, ref_bce, (z, y), **tols(dtype))


def test_gradients_with_respect_to_labels():
  with x64():
    z, y = logits((3, 5), np.float64), soft_labels((3, 5), np.float64)
    dy = jax.grad(lambda y: sce(z, y).sum())(y)
    np.testing.assert_allclose(dy, -jax.nn.log_softmax(z), rtol=1e-12)
    dz = jax.grad(lambda z: sce(z, y).sum())(z)
    np.testing.assert_allclose(
      dz, jax.nn.softmax(z) * y.sum(-1, keepdims=True) - y, atol=1e-12
    )
    yb = jnp.asarray(rng(3).random((3, 5)), np.float64)
    dz, dyb = jax.grad(lambda z, y: bce(z, y).sum(), argnums=(0, 1))(z, yb)
    np.testing.assert_allclose(dz, jax.nn.sigmoid(z) - yb, atol=1e-12)
    np.testing.assert_allclose(dyb, -z, atol=1e-12)


def _wrong_ce(bwd):
  """An integer-label CE whose custom_vjp uses the given (wrong) bwd."""

  @jax.custom_vjp
  def f(z, onehot):
    return -jnp.sum(onehot * jax.nn.log_softmax(z), -1)

  def fwd(z, onehot):
    return f(z, onehot), (z, onehot)

  f.defvjp(fwd, bwd)
  return f


@pytest.mark.parametrize(
  "bwd",
  [
    # a - onehot without the a term
    lambda res, g: (-g[..., None] * res[1], None),
    # sign flipped: onehot - a
    lambda res, g: (g[..., None] * (res[1] - jax.nn.softmax(res[0])), None),
  ],
  ids=["missing-a", "sign-flipped"],
)
def test_vjp_comparison_catches_a_wrong_formula(bwd):
  z = logits((4, 5))
  onehot = jax.nn.one_hot(int_labels((4,), 5), 5)
  wrong = _wrong_ce(bwd)
  ref = lambda z: -jnp.sum(onehot * jax.nn.log_softmax(z), -1)
  with pytest.raises(AssertionError):
    assert_vjp_matches(lambda z: wrong(z, onehot), ref, (z,), **tols(np.float32))
  # and the helper passes the right formula, so it is the formula it caught
  right = _wrong_ce(
    lambda res, g: (g[..., None] * (jax.nn.softmax(res[0]) - res[1]), None)
  )
  assert_vjp_matches(lambda z: right(z, onehot), ref, (z,), **tols(np.float32))


# ---------------------------------------------------------------------------
# check_grads, order 2, reverse mode, float64


def test_check_grads_order_2():
  with x64():
    z, y = logits((3, 5), np.float64, scale=1.0), soft_labels((3, 5), np.float64)
    c = int_labels((3,), 5)
    mask = jnp.array([[True, True, False, True, True]] * 3)
    yb = jnp.asarray(rng(3).random((3, 5)), np.float64)

    def every_loss(z, y, yb):  # one check for all: one set of compilations
      return (
        sce(z, y),
        sce(z, y, where=mask, label_smoothing=0.1),
        ice(z, c),
        ice(z, c, where=mask, label_smoothing=0.2),
        ice(z.reshape(3, 5, 1), c, axis=(2, 1)),
        bce(z, yb),
      )

    check_grads(jax.jit(every_loss), (z, y, yb), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# transformations


def _losses_f64():
  z, y = logits((3, 4), np.float64, scale=1.0), soft_labels((3, 4), np.float64)
  c = int_labels((3,), 4)
  yb = jnp.asarray(rng(3).random((3, 4)), np.float64)
  return [
    (lambda z: sce(z, y).sum(), lambda z: ref_sce(z, y).sum(), z),
    (lambda z: ice(z, c).sum(), lambda z: ref_ice(z, c).sum(), z),
    (
      lambda z: ice(z, c, label_smoothing=0.1).sum(),
      lambda z: ref_ice_smooth(z, c, 0.1).sum(),
      z,
    ),
    (lambda z: bce(z, yb).sum(), lambda z: ref_bce(z, yb).sum(), z),
  ]


def _reverse_transforms(f, z):
  """grad, vjp, jacrev, hessian (forward-over-reverse) and jacrev(jacrev)."""
  return (
    jax.grad(f)(z),
    jax.vjp(f, z)[1](jnp.ones((), z.dtype))[0],
    jax.jacrev(f)(z),
    jax.hessian(f)(z),
    jax.jacrev(jax.jacrev(f))(z),
  )


def test_grad_jacrev_hessian_and_jacrev_jacrev():
  with x64():
    for f, ref, z in _losses_f64():
      # one compiled program per loss keeps the test fast; tracing is what
      # the transformations exercise, eager or not
      got = jax.jit(functools.partial(_reverse_transforms, f))(z)
      grad, hess = jax.jit(lambda z, r=ref: (jax.grad(r)(z), jax.hessian(r)(z)))(z)
      for g, want in zip(got, [grad, grad, grad, hess, hess], strict=True):
        np.testing.assert_allclose(g, want, atol=1e-12)
    f, ref, z = _losses_f64()[1]  # and eagerly
    np.testing.assert_allclose(jax.grad(f)(z), jax.grad(ref)(z), atol=1e-12)


def test_hessian_of_soft_ce_in_both_arguments():
  with x64():
    z, y = logits((2, 3), np.float64), soft_labels((2, 3), np.float64)
    f = lambda z, y: sce(z, y).sum()
    r = lambda z, y: ref_sce(z, y).sum()
    got = jax.jit(jax.hessian(f, argnums=(0, 1)))(z, y)
    want = jax.jit(jax.hessian(r, argnums=(0, 1)))(z, y)
    for g_row, w_row in zip(got, want, strict=True):
      for g, w in zip(g_row, w_row, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-12)


def test_jit_vmap_nested_checkpoint_scan():
  with x64():
    z = logits((2, 3, 5), np.float64)
    c = int_labels((2, 3), 5)
    y = soft_labels((2, 3, 5), np.float64)
    g_ref = jax.jit(jax.grad(lambda z: ref_ice(z, c).sum()))(z)
    per_row = lambda z, c: ice(z, c)
    nested = jax.vmap(jax.vmap(per_row))
    np.testing.assert_allclose(nested(z, c), ref_ice(z, c), atol=1e-12)
    g = jax.jit(jax.grad(lambda z: nested(z, c).sum()))(z)
    np.testing.assert_allclose(g, g_ref, atol=1e-12)
    g = jax.jit(jax.grad(lambda z: jax.checkpoint(lambda z: ice(z, c))(z).sum()))(z)
    np.testing.assert_allclose(g, g_ref, atol=1e-12)

    def scanned(z):
      def step(carry, zyc):
        zi, yi, ci = zyc
        return carry + sce(zi, yi).sum() + ice(zi, ci).sum(), None

      return lax.scan(step, 0.0, (z, y, c))[0]

    def scanned_ref(z):
      return ref_sce(z, y).sum() + ref_ice(z, c).sum()

    np.testing.assert_allclose(
      jax.jit(jax.grad(scanned))(z), jax.jit(jax.grad(scanned_ref))(z), atol=1e-12
    )
    yb = jnp.asarray(rng(3).random(z.shape), np.float64)
    vb = jax.vmap(jax.vmap(jax.grad(lambda z, y: bce(z, y).sum())))
    np.testing.assert_allclose(vb(z, yb), jax.nn.sigmoid(z) - yb, atol=1e-12)


def test_vmap_with_masks_smoothing_and_ignore_index():
  z, y = logits((3, 4, 5)), soft_labels((3, 4, 5))
  c = int_labels((3, 4), 5).at[0, 1].set(-100)
  m = jnp.asarray(rng(6).random((3, 4, 5)) > 0.3).at[..., 0].set(True)
  rows = jnp.array([[True, False, True, True]] * 3)
  kw = {"label_smoothing": 0.1}

  def every_loss(z, y, c, m, rows):
    return jnp.stack(
      [
        ice(z, c, where=m, ignore_index=-100, **kw),
        ice(z, c, where=rows, ignore_index=-100, **kw),
        sce(z, y, where=m, **kw),
        sce(z, y, where=rows, **kw),
      ]
    )

  total = lambda *a: every_loss(*a).sum()
  batched, g_batched = jax.jit(lambda *a: (every_loss(*a), jax.grad(total)(*a)))(
    z, y, c, m, rows
  )
  mapped, g = jax.jit(
    lambda *a: (
      jax.vmap(every_loss, out_axes=1)(*a),
      jax.vmap(jax.grad(total))(*a),
    )
  )(z, y, c, m, rows)
  np.testing.assert_allclose(mapped, batched, rtol=1e-6)
  np.testing.assert_allclose(g, g_batched, atol=1e-6)


@pytest.mark.parametrize("transform", ["jvp", "jacfwd"])
def test_forward_mode_is_refused(transform):
  z, y, c = logits((2, 3)), soft_labels((2, 3)), int_labels((2,), 3)
  for f in [lambda z: sce(z, y), lambda z: ice(z, c), lambda z: bce(z, y)]:
    with pytest.raises(TypeError, match="custom_vjp"):
      if transform == "jvp":
        jax.jvp(f, (z,), (jnp.ones_like(z),))
      else:
        jax.jacfwd(f)(z)


# ---------------------------------------------------------------------------
# eager / jit / vmap x dtype


MODES = ["eager", "jit", "vmap"]
DTYPES = [np.float32, np.float64, jnp.bfloat16, np.float16]


def _run(mode, f, *args):
  if mode == "jit":
    return jax.jit(f)(*args)
  if mode == "vmap":
    return jax.vmap(f)(*args)
  return f(*args)


def _rel_tol(dtype):
  if np.dtype(dtype).itemsize < 4:
    return 2 * float(jnp.finfo(dtype).eps)
  return TOL[np.dtype(dtype).type]


@pytest.mark.sweep
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_modes_and_dtypes(mode, dtype):
  with x64(dtype):
    z = logits((8, 6), dtype)
    y = soft_labels((8, 6), dtype)
    c = int_labels((8,), 6)
    yb = jnp.asarray(rng(3).random((8, 6)), dtype)
    tol = _rel_tol(dtype)
    cases = [
      (lambda z, y: sce(z, y), (z, y), np_sce(z, y)),
      (
        lambda z, y: sce(z, y, label_smoothing=0.1),
        (z, y),
        np_sce(z, 0.9 * np.asarray(y, np.float64) + 0.1 / 6),
      ),
      (lambda z, c: ice(z, c), (z, c), np_ice(z, c)),
      (lambda z, y: bce(z, y), (z, yb), np_bce(z, yb)),
    ]
    for f, args, want in cases:
      got, g = _run(mode, functools.partial(_value_and_logit_grad, f), *args)
      assert got.dtype == jnp.dtype(dtype)
      err = np.abs(f64(got) - want) / np.abs(want)
      assert np.max(err) <= tol, (np.max(err), tol)
      assert g.dtype == jnp.dtype(dtype) and all_finite(g)


def _value_and_logit_grad(f, z, *rest):
  """f and the gradient of its sum in the logits, from one jax.vjp."""
  out, f_vjp = jax.vjp(lambda z: f(z, *rest), z)
  return out, f_vjp(jnp.ones_like(out))[0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_is_computed_in_float32(dtype):
  z, y = logits((2, 3), dtype), soft_labels((2, 3), dtype)
  c = jnp.array([0, 2])
  for f, args in [
    (sce, (z, y)),
    (functools.partial(sce, label_smoothing=0.1), (z, y)),
    (ice, (z, c)),
    (bce, (z, y)),
  ]:
    for fn in [f, grad_of_sum(f)]:
      text = str(jax.make_jaxpr(fn)(*args))
      # every transcendental and every reduction runs in float32
      ops = [
        line
        for line in text.splitlines()
        if any(f" = {op}" in line for op in ("exp", "log", "reduce_sum"))
      ]
      assert ops and all(":f32[" in line for line in ops), ops
      assert jax.eval_shape(fn, *args).dtype == jnp.dtype(dtype)


# ---------------------------------------------------------------------------
# the seed's worked examples


def test_seed_five_class_example():
  cases = {
    (0.1, 0.15, 0.05, 0.6, 0.1): 0.6,
    (0.15, 0.2, 0.4, 0.1, 0.15): 0.1,
    (0.05, 0.15, 0.4, 0.3, 0.1): 0.3,
  }
  with x64():
    z = jnp.log(jnp.array(list(cases), np.float64))
    label = jnp.array([3, 3, 3])
    want = -np.log(list(cases.values()))
    np.testing.assert_allclose(ice(z, label), want, rtol=1e-12)
    np.testing.assert_allclose(sce(z, jax.nn.one_hot(label, 5)), want, rtol=1e-12)
    losses = np.asarray(ice(z, label))
    assert losses[0] < losses[2] < losses[1]  # -log 0.6 < -log 0.3 < -log 0.1
    # the seed's gradient for one-hot labels: a - y
    a = jnp.exp(z)
    y = jax.nn.one_hot(label, 5)
    np.testing.assert_allclose(
      jax.grad(lambda z: ice(z, label).sum())(z), a - y, atol=1e-12
    )
    np.testing.assert_allclose(
      jax.grad(lambda z: sce(z, y).sum())(z), a - y, atol=1e-12
    )


# ---------------------------------------------------------------------------
# numerics


def test_huge_logits_float32():
  z = jnp.array([[1e30, 1e30, -1e30]], jnp.float32)
  onehot = jnp.array([[1.0, 0.0, 0.0]])
  for loss in [ice(z, jnp.array([0])), sce(z, onehot)]:
    np.testing.assert_allclose(loss, [math.log(2)], rtol=1e-6)
  want_grad = [[-0.5, 0.5, 0.0]]
  np.testing.assert_allclose(
    jax.grad(lambda z: ice(z, jnp.array([0])).sum())(z), want_grad, atol=1e-7
  )
  np.testing.assert_allclose(
    jax.grad(lambda z: sce(z, onehot).sum())(z), want_grad, atol=1e-7
  )
  # the target at -1e30: loss 2e30, gradient a - onehot
  np.testing.assert_allclose(ice(z, jnp.array([2])), [2e30], rtol=1e-6)
  np.testing.assert_allclose(
    jax.grad(lambda z: ice(z, jnp.array([2])).sum())(z), [[0.5, 0.5, -1.0]]
  )
  smooth = ice(z, jnp.array([0]), label_smoothing=0.3)
  np.testing.assert_allclose(
    smooth, [0.7 * math.log(2) + 0.1 * (2e30 + 3 * math.log(2))], rtol=1e-6
  )
  zb = jnp.array([1e30, -1e30, 1e30, -1e30], jnp.float32)
  yb = jnp.array([0.5, 0.5, 1.0, 0.0], jnp.float32)
  np.testing.assert_allclose(bce(zb, yb), [0.5e30, 0.5e30, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(
    jax.grad(lambda z: bce(z, yb).sum())(zb), [0.5, -0.5, 0.0, 0.0]
  )


def test_minus_inf_logits_are_probability_zero():
  z = jnp.array([[0.0, -INF, 1.0, -INF]], jnp.float32)
  y = jnp.array([[0.3, 0.0, 0.7, 0.0]], jnp.float32)
  kept = np.array([0, 2])
  loss = sce(z, y)
  np.testing.assert_allclose(loss, np_sce(z[:, kept], y[:, kept]), rtol=1e-6)
  dz, dy = jax.grad(lambda z, y: sce(z, y).sum(), argnums=(0, 1))(z, y)
  assert all_finite(dz) and np.all(np.asarray(dz)[:, [1, 3]] == 0)
  dz_ref = jax.grad(lambda z: ref_sce(z, y[:, kept]).sum())(z[:, kept])
  np.testing.assert_allclose(np.asarray(dz)[:, kept], dz_ref, atol=1e-7)
  # dL/dy_i = -log a_i: finite where a_i > 0, the true +inf where a_i = 0
  np.testing.assert_allclose(np.asarray(dy)[:, kept], -jax.nn.log_softmax(z[:, kept]))
  assert np.all(np.asarray(dy)[:, [1, 3]] == INF)
  c = jnp.array([2])
  np.testing.assert_allclose(ice(z, c), np_ice(z[:, kept], jnp.array([1])), rtol=1e-6)
  g = jax.grad(lambda z: ice(z, c).sum())(z)
  assert all_finite(g) and np.all(np.asarray(g)[:, [1, 3]] == 0)
  g = jax.grad(lambda z: ice(z, c, label_smoothing=0.1).sum())(z)
  assert all_finite(g)
  # the smoothing puts mass on the -inf classes: loss +inf, gradient -alpha/C
  assert ice(z, c, label_smoothing=0.1)[0] == INF
  np.testing.assert_allclose(np.asarray(g)[0, [1, 3]], -0.1 / 4)


def test_label_on_a_minus_inf_logit_costs_inf():
  z = jnp.array([[0.0, -INF, 1.0]], jnp.float32)
  assert ice(z, jnp.array([1]))[0] == INF
  assert sce(z, jnp.array([[0.5, 0.5, 0.0]]))[0] == INF
  g = jax.grad(lambda z: ice(z, jnp.array([1])).sum())(z)
  assert all_finite(g)
  np.testing.assert_allclose(g, jax.nn.softmax(z) - jnp.array([0.0, 1.0, 0.0]))
  g = jax.grad(lambda z: sce(z, jnp.array([[0.5, 0.5, 0.0]])).sum())(z)
  np.testing.assert_allclose(g, jax.nn.softmax(z) - jnp.array([0.5, 0.5, 0.0]))


def test_empty_slices_give_zero_loss_and_zero_gradient():
  inf_row = jnp.array([[-INF, -INF, -INF], [0.5, 1.0, -1.0]], jnp.float32)
  finite = inf_row.at[0].set(1.0)
  y = jnp.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], jnp.float32)
  c = jnp.array([1, 1])
  rowmask = jnp.array([False, True])
  classmask = jnp.array([[False, False, False], [True, True, True]])
  cases = [
    (lambda z, y: sce(z, y), inf_row),
    (lambda z, y: sce(z, y, label_smoothing=0.1), inf_row),
    (lambda z, y: sce(z, y, where=rowmask), finite),
    (lambda z, y: sce(z, y, where=classmask, label_smoothing=0.1), finite),
    (lambda z, y: ice(z, c) + 0 * y.sum(), inf_row),
    (lambda z, y: ice(z, c, label_smoothing=0.1) + 0 * y.sum(), inf_row),
    (lambda z, y: ice(z, c, where=rowmask) + 0 * y.sum(), finite),
    (lambda z, y: ice(z, c, where=classmask, ignore_index=-1) + 0 * y.sum(), finite),
  ]
  # one compiled program for all cases
  results = jax.jit(lambda: [_value_grads_hessian(f, z, y) for f, z in cases])()
  for loss, (gz, gy), hzz in results:
    assert loss[0] == 0 and np.isfinite(loss[1])
    assert np.all(np.asarray(gz)[0] == 0) and np.all(np.asarray(gy)[0] == 0)
    assert all_finite(gz) and all_finite(gy)
    assert all_finite(hzz) and np.all(np.asarray(hzz)[0] == 0)
  # and eagerly
  loss = sce(inf_row, y)
  gz, gy = grad_of_sum(sce, (0, 1))(inf_row, y)
  assert loss[0] == 0 and np.all(np.asarray(gz)[0] == 0)
  assert np.all(np.asarray(gy)[0] == 0)


def _value_grads_hessian(f, z, y):
  """f, its gradients and its Hessian in z (rows of z, summed loss)."""
  total = lambda z, y: jnp.sum(f(z, y))
  return f(z, y), jax.grad(total, (0, 1))(z, y), jax.hessian(total)(z, y)


@pytest.mark.parametrize("bad", [np.nan, INF])
def test_nan_and_plus_inf_poison_their_example_only(bad):
  z = logits((3, 4)).at[1, 2].set(bad)
  y, c = soft_labels((3, 4)), jnp.array([0, 0, 3])
  for f in [
    lambda z: sce(z, y),
    lambda z: ice(z, c),
    lambda z: ice(z, c, label_smoothing=0.1),
  ]:
    loss = np.asarray(f(z))
    assert np.isnan(loss[1]) and all_finite(loss[[0, 2]])
    g = np.asarray(grad_of_sum(f)(z))
    assert np.all(np.isnan(g[1])) and all_finite(g[[0, 2]])
  # a NaN label poisons its example too
  y_nan = y.at[2, 1].set(np.nan)
  loss = np.asarray(sce(logits((3, 4)), y_nan))
  assert np.isnan(loss[2]) and all_finite(loss[:2])
  zb = jnp.array([0.5, bad, 1.0]) if bad != INF else jnp.array([0.5, np.nan, 1.0])
  lb = np.asarray(bce(zb, jnp.array([0.3, 0.3, 0.3])))
  assert np.isnan(lb[1]) and all_finite(lb[[0, 2]])


# ---------------------------------------------------------------------------
# where means slicing


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grads(f, z, y):
  return f(z, y), grad_of_sum(f, (0, 1))(z, y)


def _keep_four_of_six(seed, rows):
  """A class mask keeping 4 of 6 classes in each row, so z[m] is [rows, 4]."""
  r = rng(seed)
  mask = np.zeros((rows, 6), bool)
  for i in range(rows):
    mask[i, r.permutation(6)[:4]] = True
  return mask


def test_soft_where_means_slicing():
  z, y = logits((4, 6)), soft_labels((4, 6))
  mask = _keep_four_of_six(8, 4)
  # row-wise slices
  zs, ys = (np.asarray(a)[mask].reshape(4, 4) for a in (z, y))
  for alpha in [0.0, 0.2]:
    f = functools.partial(sce, axis=-1, label_smoothing=alpha)
    got, (gz, gy) = _value_and_grads(functools.partial(f, where=mask), z, y)
    want, (wz, wy) = _value_and_grads(f, zs, ys)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    gz, gy = np.asarray(gz), np.asarray(gy)
    np.testing.assert_allclose(gz[mask].reshape(4, 4), wz, atol=1e-6)
    np.testing.assert_allclose(gy[mask].reshape(4, 4), wy, atol=1e-6)
    assert np.all(gz[~mask] == 0) and np.all(gy[~mask] == 0)
  # label mass on masked classes is dropped, so the loss is never negative
  y1 = jnp.array([[0.0, 1.0, 0.0]])
  m1 = jnp.array([[True, False, True]])
  z1 = jnp.array([[1.0, 5.0, 2.0]])
  assert sce(z1, y1, where=m1)[0] == 0
  assert ice(z1, jnp.array([1]), where=m1)[0] == 0
  # optax: the measured case, a negative loss
  optax_ice = optax.losses.softmax_cross_entropy_with_integer_labels
  assert optax_ice(z1, jnp.array([1]), where=m1)[0] < 0


def test_soft_smoothing_counts_unmasked_classes():
  z, y = logits((1, 5)), soft_labels((1, 5))
  m = np.array([True, True, False, True, False])
  got = sce(z, y, where=jnp.asarray(m[None]), label_smoothing=0.2)
  want = sce(z[:, m], y[:, m], label_smoothing=0.2)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_integer_where_means_slicing_and_agrees_with_one_hot():
  z = logits((5, 6))
  mask = _keep_four_of_six(9, 5)
  c = np.array([np.flatnonzero(row)[i % 4] for i, row in enumerate(mask)])
  c[4] = np.flatnonzero(~mask[4])[0]  # example 4's target class is masked out
  onehot = jax.nn.one_hot(c, 6)
  m = jnp.asarray(mask)
  got = ice(z, jnp.asarray(c), where=m)
  np.testing.assert_allclose(got, sce(z, onehot, where=m), rtol=1e-6)
  g = jax.grad(lambda z: ice(z, jnp.asarray(c), where=m).sum())(z)
  np.testing.assert_allclose(
    g, jax.grad(lambda z: sce(z, onehot, where=m).sum())(z), atol=1e-7
  )
  zs = z[mask].reshape(5, 4)
  cs = np.array([np.sum(mask[i, : c[i]]) for i in range(5)])
  np.testing.assert_allclose(got[:4], ice(zs, jnp.asarray(cs))[:4], rtol=1e-6)
  assert got[4] == 0 and np.all(np.asarray(g)[4] == 0)
  for alpha in [0.1, 0.5]:
    np.testing.assert_allclose(
      ice(z, jnp.asarray(c), where=m, label_smoothing=alpha)[:4],
      sce(z, onehot, where=m, label_smoothing=alpha)[:4],
      rtol=1e-6,
    )


def test_masked_target_class_is_reported_with_check_labels():
  z = logits((3, 4))
  c = jnp.array([0, 1, 2])
  m = jnp.array([[True] * 4, [True, False, True, True], [True] * 4])
  f = lambda z, c, m: ice(z, c, where=m, check_labels=True)
  for g in [f, jax.jit(f)]:
    err, out = checkify.checkify(g, errors=checkify.user_checks)(z, c, m)
    assert err.get() is not None and "masks out" in err.get()
    assert out[1] == 0
  with pytest.raises(checkify.JaxRuntimeError, match="masks out"):
    f(z, c, m)  # eager: raised at once
  assert ice(z, c, where=m)[1] == 0  # nothing raised without check_labels
  # masking whole examples is not an error, and their labels are never read
  rows = jnp.array([True, False, True])
  for labels in [c, jnp.array([0, -1, 2]), jnp.array([0, 10**6, 2])]:
    err, out = checkify.checkify(f, errors=checkify.user_checks)(z, labels, rows)
    assert err.get() is None
    assert out[1] == 0 and all_finite(out)
    g = grad_of_sum(ice)(z, labels, where=rows)
    assert all_finite(g) and np.all(np.asarray(g)[1] == 0)


# ---------------------------------------------------------------------------
# bad labels, ignore_index, checkify


@pytest.mark.parametrize("bad", [-1, 4, 10**6, -100])
def test_out_of_range_labels_give_nan_row(bad):
  z = logits((3, 4))
  c = jnp.array([0, bad, 3])
  for alpha in [0.0, 0.1]:
    loss = np.asarray(ice(z, c, label_smoothing=alpha))
    assert np.isnan(loss[1]) and all_finite(loss[[0, 2]])
    rows = np.array([0, 2])
    np.testing.assert_allclose(
      loss[rows], ice(z[rows], c[rows], label_smoothing=alpha), rtol=1e-6
    )
    g = np.asarray(grad_of_sum(ice)(z, c, label_smoothing=alpha))
    assert np.all(np.isnan(g[1])) and all_finite(g[[0, 2]])


def test_optax_wraps_minus_one_and_jaxsmx_does_not():
  z = logits((1, 4))
  wrapped = optax.losses.softmax_cross_entropy_with_integer_labels(z, jnp.array([-1]))
  last = optax.losses.softmax_cross_entropy_with_integer_labels(z, jnp.array([3]))
  np.testing.assert_allclose(wrapped, last)  # optax reads -1 as class 3
  assert np.isnan(ice(z, jnp.array([-1]))[0])
  # optax: NaN loss but a finite, wrong gradient for label C; jaxsmx: NaN
  g_optax = jax.grad(
    lambda z: optax.losses.softmax_cross_entropy_with_integer_labels(
      z, jnp.array([4])
    ).sum()
  )(z)
  assert all_finite(g_optax)
  assert np.all(np.isnan(jax.grad(lambda z: ice(z, jnp.array([4])).sum())(z)))


def test_ignore_index_gives_zero_and_zero_gradient():
  z = logits((4, 5))
  c = jnp.array([1, -100, 4, -100])
  for alpha in [0.0, 0.2]:
    f = functools.partial(ice, labels=c, ignore_index=-100, label_smoothing=alpha)
    loss = np.asarray(f(z))
    assert np.all(loss[[1, 3]] == 0) and np.all(loss[[0, 2]] > 0)
    g = np.asarray(grad_of_sum(f)(z))
    assert np.all(g[[1, 3]] == 0) and all_finite(g)
  # an in-range ignore_index, as torch allows
  loss = ice(z, jnp.array([0, 1, 2, 0]), ignore_index=0)
  assert loss[0] == 0 and loss[3] == 0 and loss[1] > 0
  # with ignore_index set, other out-of-range labels are still NaN
  assert np.isnan(ice(z, jnp.array([0, -1, 2, -100]), ignore_index=-100)[1])


@pytest.mark.parametrize("jit", [False, True])
def test_check_labels_reports_out_of_range_labels(jit):
  z = logits((3, 4))
  c = jnp.array([0, 7, -2])
  f = lambda z, c: ice(z, c, ignore_index=-100, check_labels=True)
  f = jax.jit(f) if jit else f
  err, out = checkify.checkify(f, errors=checkify.user_checks)(z, c)
  msg = err.get()
  assert msg is not None
  assert "[0, 4)" in msg and "ignore_index=-100" in msg and "[ 0  7 -2]" in msg
  with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 4\)"):
    err.throw()
  assert np.isnan(out[1]) and np.isnan(out[2])
  # valid labels and ignore_index are not reported
  err, _ = checkify.checkify(f, errors=checkify.user_checks)(z, jnp.array([0, 3, -100]))
  assert err.get() is None
  # without check_labels nothing is raised, eager or jitted, and the bad
  # rows are NaN
  g = lambda z, c: ice(z, c, ignore_index=-100)
  for h in [g, jax.jit(g)]:
    out = h(z, c)
    assert np.isnan(out[1]) and np.isfinite(out[0])


def _check_contexts(loss):
  """Ways to call a loss with check_labels=True: (name, fn(z, c) -> err|None)."""
  f = lambda z, c: loss(z, c, check_labels=True).sum()
  ck = lambda h: checkify.checkify(h, errors=checkify.user_checks)

  def eager(z, c):
    try:
      f(z, c)
    except checkify.JaxRuntimeError as e:
      return str(e)
    return None

  return [
    ("eager", eager),
    ("checkify(f)", lambda z, c: ck(f)(z, c)[0].get()),
    ("checkify(jit(f))", lambda z, c: ck(jax.jit(f))(z, c)[0].get()),
    ("jit(checkify(f))", lambda z, c: jax.jit(ck(f))(z, c)[0].get()),
    (
      "checkify(vmap(f))",
      lambda z, c: ck(jax.vmap(f))(z[None], c[None])[0].get(),
    ),
    ("checkify(grad(f))", lambda z, c: ck(jax.grad(f))(z, c)[0].get()),
    (
      "checkify(jit(grad(f)))",
      lambda z, c: ck(jax.jit(jax.grad(f)))(z, c)[0].get(),
    ),
    (
      "grad(checkify(f))",
      lambda z, c: jax.grad(lambda z: ck(f)(z, c)[::-1], has_aux=True)(z)[1].get(),
    ),
  ]


@pytest.mark.parametrize("where", [None, "classes"])
@pytest.mark.parametrize("i", range(8))
def test_check_labels_works_in_every_context(i, where):
  z = logits((3, 4))
  m = None if where is None else jnp.array([[True] * 4] * 3)
  loss = functools.partial(ice, where=m)
  name, run = _check_contexts(loss)[i]
  assert run(z, jnp.array([0, 1, 3])) is None, name
  msg = run(z, jnp.array([0, 4, 1]))
  assert msg is not None and "[0, 4)" in msg and "[0 4 1]" in msg, name


@pytest.mark.parametrize("check", [False, True])
def test_grad_of_checkified_loss_matches_plain_grad(check):
  # jax.grad of checkify(f) used to fail ("foreach() argument 2 is shorter
  # than argument 1"): the check ran before the custom_vjp call
  z, c = logits((3, 4)), jnp.array([0, 1, 3])
  f = lambda z: ice(z, c, check_labels=check).sum()
  checked = lambda z: checkify.checkify(f, errors=checkify.user_checks)(z)[1]
  want = jax.grad(lambda z: ice(z, c).sum())(z)
  for g in [jax.grad(checked), jax.jit(jax.grad(checked))]:
    np.testing.assert_array_equal(g(z), want)


def test_check_labels_traced_without_checkify_is_refused():
  z, c = logits((3, 4)), jnp.array([0, 1, 3])
  with pytest.raises(ValueError, match="functionalized"):
    jax.jit(lambda z, c: ice(z, c, check_labels=True))(z, c)


@pytest.mark.parametrize("bad", [1, "yes", None, jnp.array(1)])
def test_check_labels_must_be_a_bool(bad):
  with pytest.raises(TypeError, match="check_labels must be a bool"):
    ice(logits((2, 3)), jnp.array([0, 1]), check_labels=bad)


# ---------------------------------------------------------------------------
# sigmoid BCE edges


def test_bce_infinite_and_large_logits():
  z = jnp.array([INF, -INF, INF, -INF], jnp.float32)
  y = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
  loss = np.asarray(bce(z, y))
  np.testing.assert_array_equal(loss, [0.0, 0.0, INF, INF])
  optax_loss = np.asarray(optax.losses.sigmoid_binary_cross_entropy(z, y))
  assert np.all(np.isnan(optax_loss[:2]))  # optax: NaN where the label agrees
  g = jax.grad(lambda z: bce(z, y).sum())(z)
  np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, -1.0])
  # large |z|: exact, in float32 as in float64
  zl = jnp.array([80.0, -80.0, 200.0, -200.0, 1e20], jnp.float32)
  yl = jnp.array([0.0, 1.0, 0.25, 0.75, 1.0], jnp.float32)
  np.testing.assert_allclose(bce(zl, yl), np_bce(zl, yl), rtol=1e-7)
  # a small loss keeps its relative accuracy
  np.testing.assert_allclose(
    bce(jnp.array([30.0]), jnp.array([1.0])), [math.exp(-30)], rtol=1e-6
  )


def test_bce_integer_and_bool_labels():
  z = logits((2, 3))
  yi = jnp.array([[0, 1, 1], [1, 0, 0]])
  np.testing.assert_allclose(bce(z, yi), bce(z, yi.astype(jnp.float32)))
  np.testing.assert_allclose(bce(z, yi.astype(bool)), bce(z, yi.astype(jnp.float32)))


# ---------------------------------------------------------------------------
# structural: axis=k equals moveaxis


@pytest.mark.parametrize("k", [0, 1, -2])
def test_axis_equals_moveaxis(k):
  z, y = logits((4, 5, 6)), soft_labels((4, 5, 6))
  c = int_labels((4, 5), 6)

  @functools.partial(jax.jit, static_argnums=2)
  def losses_and_grads(z, y, axis_k):
    ax = k if axis_k else -1
    f = lambda z, y: (sce(z, y, axis=ax), ice(z, c, axis=ax))
    return f(z, y), grad_of_sum(lambda *a: jnp.stack(f(*a)), (0, 1))(z, y)

  (sk, ik), (gzk, gyk) = losses_and_grads(
    jnp.moveaxis(z, -1, k), jnp.moveaxis(y, -1, k), True
  )
  (s, i), (gz, gy) = losses_and_grads(z, y, False)
  np.testing.assert_allclose(sk, s, rtol=1e-6)
  np.testing.assert_allclose(ik, i, rtol=1e-6)
  np.testing.assert_allclose(gzk, jnp.moveaxis(gz, -1, k), atol=1e-7)
  np.testing.assert_allclose(gyk, jnp.moveaxis(gy, -1, k), atol=1e-7)


# ---------------------------------------------------------------------------
# hypothesis properties


@st.composite
def _problem(draw):
  """Float64 logits (some -inf), normalised labels, a class mask, int labels.

  One shape throughout, so that each jitted check below compiles once.
  """
  seed = draw(st.integers(0, 2**32 - 1))
  scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
  r = rng(seed)
  z = r.normal(size=(4, 5)) * scale
  z[r.random((4, 5)) < 0.15] = -INF
  y = r.dirichlet(np.ones(5) * 0.5, size=4)
  mask = r.random((4, 5)) > 0.3
  c = r.integers(0, 5, size=4)
  return z, y, mask, c


def _variants(z, y, m, c, alpha):
  return [
    sce(z, y, label_smoothing=alpha),
    sce(z, y, where=m, label_smoothing=alpha),
    ice(z, c, label_smoothing=alpha),
    ice(z, c, where=m, label_smoothing=alpha),
  ]


@functools.partial(jax.jit, static_argnums=4)
def _all_losses(z, y, m, c, alpha):
  return jnp.stack(_variants(z, y, m, c, alpha))


@functools.partial(jax.jit, static_argnums=4)
def _all_gradients(z, y, m, c, alpha):
  return jnp.stack(jax.jacrev(lambda z: _all_losses(z, y, m, c, alpha))(z))


@HYPOTHESIS
@given(_problem(), st.sampled_from([0.0, 0.1]))
def test_property_loss_is_never_negative(problem, alpha):
  with x64():
    loss = _all_losses(*map(jnp.asarray, problem), alpha)
    assert np.all(np.asarray(loss) >= 0)


@HYPOTHESIS
@given(_problem(), st.sampled_from([0.0, 0.3]))
def test_property_gradient_rows_sum_to_zero(problem, alpha):
  with x64():
    # [variant, example, example, class]: d loss_i / d z_j, finite even with
    # -inf logits, and summing to 0 over the classes
    g = np.asarray(_all_gradients(*map(jnp.asarray, problem), alpha))
    assert all_finite(g)
    np.testing.assert_allclose(np.sum(g, -1), 0.0, atol=1e-12)


@jax.jit
def _gibbs(z, y):
  return sce(z, y), sce(jnp.log(y), y)


@HYPOTHESIS
@given(_problem())
def test_property_gibbs_inequality(problem):
  z, y, _, _ = problem
  z[np.all(np.isinf(z), -1)] = 0.0  # an empty slice costs 0 by convention
  with x64():
    h = scipy.special.entr(y).sum(-1)
    loss, at_y = map(np.asarray, _gibbs(jnp.asarray(z), jnp.asarray(y)))
    assert np.all(loss >= h - 1e-12)
    np.testing.assert_allclose(at_y, h, rtol=1e-10, atol=1e-12)  # q = p


# ---------------------------------------------------------------------------
# bad input errors


def test_error_complex_logits():
  # integer logits are promoted as jax.nn.softmax promotes them
  # (tests/test_settings.py); complex ones are refused
  for f in [
    lambda: sce(jnp.ones((2, 3), jnp.complex64), jnp.ones((2, 3))),
    lambda: ice(jnp.ones((2, 3), jnp.complex64), jnp.array([0, 1])),
    lambda: bce(jnp.ones((2, 3), jnp.complex64), jnp.ones((2, 3))),
  ]:
    with pytest.raises(TypeError, match=r"logits must be real.*complex64"):
      f()


def test_error_float_labels_to_integer_function():
  with pytest.raises(TypeError, match=r"integer dtype.*float32.*softmax_cross_entropy"):
    ice(logits((2, 3)), jnp.array([0.0, 1.0]))


def test_error_non_bool_where():
  with pytest.raises(TypeError, match=r"boolean mask.*int32"):
    sce(logits((2, 3)), soft_labels((2, 3)), where=jnp.ones((2, 3), jnp.int32))
  with pytest.raises(TypeError, match=r"boolean mask.*float32"):
    ice(logits((2, 3)), jnp.array([0, 1]), where=jnp.ones((2,)))


def test_error_traced_label_smoothing():
  z, y = logits((2, 3)), soft_labels((2, 3))
  with pytest.raises(
    TypeError, match=r"label_smoothing must be a concrete value.*traced.*static"
  ):
    jax.jit(lambda a: sce(z, y, label_smoothing=a))(0.1)
  with pytest.raises(TypeError, match=r"label_smoothing must be a concrete value"):
    jax.jit(lambda a: ice(z, jnp.array([0, 1]), label_smoothing=a))(0.1)


def test_error_soft_label_shape_shows_both_shapes():
  with pytest.raises(ValueError, match=r"broadcast to one shape.*\(2, 3\).*\(2, 4\)"):
    sce(logits((2, 3)), soft_labels((2, 4)))
  with pytest.raises(ValueError, match=r"broadcast to one shape.*\(2, 3\).*\(4,\)"):
    bce(logits((2, 3)), jnp.ones((4,)))


def test_error_integer_label_shape():
  z = logits((4, 3))
  with pytest.raises(ValueError, match=r"expected \(4,\), got \(3,\)"):
    ice(z, jnp.array([0, 1, 2]))
  with pytest.raises(ValueError, match=r"one-hot.*softmax_cross_entropy"):
    ice(z, jnp.zeros((4, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"expected \(2,\), got \(2, 3\)"):
    ice(logits((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), axis=(1, 2))


def test_error_axis_out_of_range():
  for f in [
    lambda: sce(logits((2, 3)), soft_labels((2, 3)), axis=2),
    lambda: ice(logits((2, 3)), jnp.array([0, 1]), axis=-3),
  ]:
    with pytest.raises(ValueError, match=r"axis -?\d+ is out of range.*rank 2"):
      f()


def test_error_where_not_broadcastable():
  with pytest.raises(ValueError, match=r"where must broadcast.*\(2, 3\).*\(3, 2\)"):
    sce(logits((2, 3)), soft_labels((2, 3)), where=jnp.ones((3, 2), bool))
  with pytest.raises(ValueError, match=r"where must broadcast.*\(5,\)"):
    ice(logits((2, 3)), jnp.array([0, 1]), where=jnp.ones((5,), bool))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_error_label_smoothing_outside_unit_interval(alpha):
  rule = r"label_smoothing must lie in \[0, 1\]; got " + re.escape(repr(alpha))
  with pytest.raises(ValueError, match=rule):
    sce(logits((2, 3)), soft_labels((2, 3)), label_smoothing=alpha)
  with pytest.raises(ValueError, match=rule):
    ice(logits((2, 3)), jnp.array([0, 1]), label_smoothing=alpha)


def test_error_ignore_index_type():
  with pytest.raises(TypeError, match=r"ignore_index must be an int or None"):
    ice(logits((2, 3)), jnp.array([0, 1]), ignore_index=-100.0)


# ---------------------------------------------------------------------------
# doctests


@pytest.mark.parametrize("module", [_soft_labels, _integer_labels, _sigmoid])
def test_doctests(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0


def test_16_bit_tiny_losses_keep_their_relative_accuracy():
  # A confident, correct example: the loss log(1 + 2 e^-z0) sits far below
  # float32's epsilon next to 1, where log(sum) would round it away (the sum
  # is 1 + tiny). bfloat16 inputs promise 2 eps of bfloat16 relative error.
  z0 = np.array([3.0, 8.0, 12.0, 15.0, 17.0])
  logits = np.stack([z0, np.zeros_like(z0), np.zeros_like(z0)], -1)
  expected = np.log1p(2 * np.exp(-z0))
  eps = float(jnp.finfo(jnp.bfloat16).eps)
  z = jnp.asarray(logits, jnp.bfloat16)
  labels = jnp.zeros(len(z0), jnp.int32)
  onehot = jax.nn.one_hot(labels, 3, dtype=jnp.bfloat16)
  for loss in (
    jaxsmx.softmax_cross_entropy_with_integer_labels(z, labels),
    jaxsmx.softmax_cross_entropy(z, onehot),
  ):
    rel = np.abs(np.asarray(loss, np.float64) / expected - 1)
    assert rel.max() <= 2 * eps, rel


# ---------------------------------------------------------------------------
# integer labels of every dtype, with every class count (never a wrong logit)

LABEL_DTYPES = (
  "int8",
  "int16",
  "int32",
  "int64",
  "uint8",
  "uint16",
  "uint32",
  "uint64",
)
CLASS_COUNTS = (3, 200, 300, 40000, 70000)


def _label_values(dtype, num_classes):
  """Valid labels near both ends, and out-of-range ones the dtype can hold."""
  top = min(num_classes - 1, int(np.iinfo(dtype).max))
  valid = [top, 1, 0, top // 2]
  bad = [
    v for v in (-1, num_classes) if np.iinfo(dtype).min <= v <= np.iinfo(dtype).max
  ]
  return valid, bad


@pytest.mark.sweep
@pytest.mark.parametrize("x64_on", [False, True], ids=["x32", "x64"])
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_labels_of_every_integer_dtype(label_dtype, num_classes, x64_on):
  valid, bad = _label_values(np.dtype(label_dtype), num_classes)
  values = valid + bad
  z = rng(5).normal(size=(len(values), num_classes)).astype(np.float32)
  with jax.enable_x64(x64_on):
    c = jnp.asarray(np.array(values, label_dtype))
    loss, vjp = jax.vjp(lambda z: ice(z, c), jnp.asarray(z))
    (g,) = vjp(jnp.ones(len(values), jnp.float32))
  loss, g = np.asarray(loss, np.float64), np.asarray(g, np.float64)
  n = len(valid)
  z64 = z[:n].astype(np.float64)
  want = scipy.special.logsumexp(z64, -1) - z64[np.arange(n), valid]
  np.testing.assert_allclose(loss[:n], want, rtol=1e-6)
  onehot = np.zeros((n, num_classes))
  onehot[np.arange(n), valid] = 1.0
  np.testing.assert_allclose(g[:n], scipy.special.softmax(z64, -1) - onehot, atol=1e-6)
  assert np.all(np.isnan(loss[n:])) and np.all(np.isnan(g[n:]))


@pytest.mark.sweep
@pytest.mark.parametrize("x64_on", [False, True], ids=["x32", "x64"])
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_check_labels_of_every_integer_dtype(label_dtype, x64_on):
  for num_classes in (3, 300, 70000):
    valid, bad = _label_values(np.dtype(label_dtype), num_classes)
    z = jnp.zeros((len(valid), num_classes))
    f = checkify.checkify(
      lambda z, c: ice(z, c, ignore_index=-100, check_labels=True),
      errors=checkify.user_checks,
    )
    with jax.enable_x64(x64_on):
      err, _ = f(z, jnp.asarray(np.array(valid, label_dtype)))
      assert err.get() is None, (num_classes, err.get())
      for b in bad:
        labels = np.array([*valid[:-1], b], label_dtype)
        err, _ = f(z, jnp.asarray(labels))
        assert f"[0, {num_classes})" in (err.get() or ""), (num_classes, b)


def test_uint8_labels_with_300_classes_read_the_right_logit():
  # the example: the clip bound 299 overflowed uint8 and read class 43
  z = jnp.broadcast_to(jnp.arange(300.0) / 40, (2, 300))
  got = ice(z, jnp.array([3, 250], jnp.uint8))
  want = scipy.special.logsumexp(np.arange(300.0) / 40) - np.array([3, 250]) / 40
  np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------------------
# mixed and 16-bit dtypes: gradients in the primal's dtype, computed in float32


@pytest.mark.parametrize(
  "z_dtype,y_dtype",
  [("bfloat16", "float32"), ("float32", "bfloat16"), ("float16", "float32")],
)
@pytest.mark.parametrize(
  "loss", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"]
)
def test_mixed_dtype_gradients_keep_their_precision(loss, z_dtype, y_dtype):
  f = getattr(jaxsmx, loss)
  z = jnp.asarray(rng(3).normal(size=(4, 7)), z_dtype)
  y = jnp.asarray(rng(4).dirichlet(np.ones(7), 4), y_dtype)
  out = f(z, y)
  gz, gy = jax.grad(lambda a, b: f(a, b).astype(jnp.float32).sum(), (0, 1))(z, y)
  assert gz.dtype == z.dtype and gy.dtype == y.dtype
  with jax.enable_x64(True):
    z64, y64 = (jnp.asarray(f64(a)) for a in (z, y))
    if loss == "softmax_cross_entropy":
      ref = lambda a, b: -jnp.sum(b * jax.nn.log_softmax(a), -1)
    else:
      ref = ref_bce
    rz, ry = jax.grad(lambda a, b: ref(a, b).sum(), (0, 1))(z64, y64)
  # each gradient is computed in float32 and rounded once to its own dtype
  # (the issue: a float32 labels' gradient rounded through bfloat16 had 4e-3)
  for got, want in [(gz, rz), (gy, ry)]:
    err = np.abs(f64(got) - np.asarray(want)) / np.maximum(
      np.abs(np.asarray(want)), 1e-3
    )
    tol = eps_of(got.dtype) + 8 * eps_of(jnp.float32)
    assert err.max() <= tol, (got.dtype, err.max())
  # the result dtype is optax's
  want_dtype = optax_loss(loss)(z, y).dtype
  assert out.dtype == want_dtype, (out.dtype, want_dtype)


def eps_of(dtype):
  return float(jnp.finfo(dtype).eps)


def optax_loss(name):
  return getattr(optax.losses, name)


# ---------------------------------------------------------------------------
# optax's semantics: broadcasting, masks, one-hot dtypes, tuple axes


def _same_as_optax(name, *args, rtol=1e-6, **kw):
  got = getattr(jaxsmx, name)(*args, **kw)
  want = getattr(optax.losses, name)(*args, **kw)
  assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
  np.testing.assert_allclose(f64(got), f64(want), rtol=rtol, atol=1e-6)
  return got


def test_bce_broadcasts_as_optax():
  z = logits((4, 3))
  _same_as_optax("sigmoid_binary_cross_entropy", z, 1.0)  # the GAN loss
  _same_as_optax("sigmoid_binary_cross_entropy", z, jnp.array([0.0, 1.0, 0.5]))
  _same_as_optax("sigmoid_binary_cross_entropy", z[0], soft_labels((4, 3)))
  _same_as_optax("sigmoid_binary_cross_entropy", z, jnp.array([True, False, True]))
  # gradients of broadcast labels are summed over the broadcast axes
  gy = jax.grad(lambda y: bce(z, y).sum())(jnp.array([0.0, 1.0, 0.5]))
  np.testing.assert_allclose(gy, -np.asarray(z).sum(0), rtol=1e-6)


@pytest.mark.parametrize("labels_dtype", ["float32", "bfloat16"])
def test_bce_result_dtype_is_optax(labels_dtype):
  z = logits((3, 2), jnp.bfloat16)
  _same_as_optax(
    "sigmoid_binary_cross_entropy", z, soft_labels((3, 2), labels_dtype), rtol=1e-2
  )


@pytest.mark.parametrize("dtype", ["int32", "bool", "float32"])
def test_soft_ce_takes_one_hot_labels_of_any_dtype(dtype):
  z, c = logits((5, 4)), int_labels((5,), 4)
  onehot = jax.nn.one_hot(c, 4, dtype=dtype)
  got = _same_as_optax("softmax_cross_entropy", z, onehot)
  np.testing.assert_allclose(got, ice(z, c), rtol=1e-6)
  assert jax.grad(lambda z: sce(z, onehot).sum())(z).dtype == z.dtype


def test_soft_ce_broadcasts_labels_as_optax():
  z = logits((5, 4))
  y = soft_labels((4,))
  _same_as_optax("softmax_cross_entropy", z, y)  # one distribution for all
  _same_as_optax("softmax_cross_entropy", z[:1], soft_labels((5, 4)))
  gy = jax.grad(lambda y: sce(z, y).sum())(y)
  np.testing.assert_allclose(gy, -jax.nn.log_softmax(z).sum(0), rtol=1e-5)


def test_integer_labels_broadcast_as_optax():
  z = logits((5, 4))
  _same_as_optax(
    "softmax_cross_entropy_with_integer_labels", z[None], jnp.array([[1] * 5])
  )
  np.testing.assert_allclose(ice(z, jnp.array(2)), ice(z, jnp.full(5, 2)), rtol=0)


def test_class_indices_given_to_soft_ce_are_refused():
  with pytest.raises(TypeError, match="softmax_cross_entropy_with_integer_labels"):
    sce(logits((4, 4)), jnp.array([0, 1, 2, 3]))


@pytest.mark.parametrize(
  "name", ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"]
)
def test_lower_rank_mask_is_one_flag_per_example_as_optax(name):
  z = logits((4, 4))
  labels = (
    soft_labels((4, 4)) if name == "softmax_cross_entropy" else int_labels((4,), 4)
  )
  rows = jnp.array([True, False, True, True])
  # B == C: a (C,) mask is read as one flag per example, as optax reads it
  got = _same_as_optax(name, z, labels, where=rows)
  assert got[1] == 0
  # and optax's rank rule for a batch of rank 2 (optax's integer-label CE
  # fails there, in its jnp.any over the class axis)
  if name == "softmax_cross_entropy":
    z3 = logits((2, 4, 3))
    _same_as_optax(name, z3, soft_labels((2, 4, 3)), where=jnp.array([True, False] * 2))
  # B != C: optax raises, and so does jaxsmx, with the per-example reading
  with pytest.raises(ValueError, match="one flag per example"):
    getattr(jaxsmx, name)(logits((3, 4)), labels[:3], where=jnp.ones(4, bool))


@pytest.mark.parametrize("axis", [(1, 3), (3, 2), (0, 1, 3), (-1, -2)])
def test_tuple_axis_is_bit_exact_with_one_flattened_axis(axis):
  shape = (2, 3, 4, 5)
  ndim = len(shape)
  class_axes = tuple(a % ndim for a in axis)
  batch_axes = tuple(a for a in range(ndim) if a not in class_axes)
  z = logits(shape)
  flat = jnp.transpose(z, batch_axes + class_axes).reshape(
    (*tuple(shape[a] for a in batch_axes), -1)
  )
  num_classes = flat.shape[-1]
  c = int_labels(flat.shape[:-1], num_classes)
  y = soft_labels(flat.shape)
  y_full = jnp.transpose(
    y.reshape(
      tuple(shape[a] for a in batch_axes) + tuple(shape[a] for a in class_axes)
    ),
    np.argsort(batch_axes + class_axes),
  )
  pairs = [
    (lambda z: ice(z, c, axis=axis), lambda f: ice(f, c)),
    (lambda z: sce(z, y_full, axis=axis), lambda f: sce(f, y)),
    (
      lambda z: ice(z, c, axis=axis, label_smoothing=0.1),
      lambda f: ice(f, c, label_smoothing=0.1),
    ),
  ]
  for tuple_f, flat_f in pairs:
    np.testing.assert_array_equal(tuple_f(z), flat_f(flat))
    g = jax.grad(lambda z, f=tuple_f: f(z).sum())(z)
    g_flat = jax.grad(lambda x, f=flat_f: f(x).sum())(flat)
    # the gradient to within an ulp of the row's largest entry: XLA fuses
    # the transpose back into the last multiply
    np.testing.assert_allclose(
      jnp.transpose(g, batch_axes + class_axes).reshape(flat.shape),
      g_flat,
      rtol=0,
      atol=eps_of(jnp.float32) * float(jnp.max(jnp.abs(g_flat))),
    )


# ---------------------------------------------------------------------------
# eager calls: one compiled call


@pytest.mark.parametrize(
  "call",
  [
    lambda z, p, c, m: sce(z, p),
    lambda z, p, c, m: sce(z, p, where=m, label_smoothing=0.1),
    lambda z, p, c, m: ice(z, c),
    lambda z, p, c, m: ice(z, c, where=m, ignore_index=-100),
    lambda z, p, c, m: bce(z, p),
    lambda z, p, c, m: bce(z, 1.0),
  ],
)
def test_a_loss_is_one_compiled_call(call):
  # the argument checks run in Python at trace time; all of the arithmetic,
  # broadcasting and dtype conversion included, is one jitted call
  z, p, c = logits((4, 5)), soft_labels((4, 5)), int_labels((4,), 5)
  eqns = jax.make_jaxpr(call)(z, p, c, p > 0.05).jaxpr.eqns
  assert [e.primitive.name for e in eqns] == ["jit"], eqns
