"""Tests for the sigmoid losses' newer members (jaxsmx/_sigmoid.py): focal
loss against optax, and ``pos_weight`` against torch.

Values and gradients are compared with the peers on random inputs to 1e-5
in float32; where the peer is NaN (infinite logits) or drops a term (optax's
label gradient at hard labels), against float64 finite differences and limits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_vjp_matches, f64
from jax.test_util import check_grads

import jaxsmx

focal = jaxsmx.sigmoid_focal_loss
bce = jaxsmx.sigmoid_binary_cross_entropy
INF = np.inf
TOL = {"rtol": 1e-5, "atol": 1e-5}


def rng(seed=0):
  return np.random.default_rng(seed)


def inputs(shape=(6, 5), seed=0, hard=False):
  r = rng(seed)
  z = (r.normal(size=shape) * 3).astype(np.float32)
  y = r.random(shape).astype(np.float32)
  return z, (y > 0.5).astype(np.float32) if hard else y


def grads(f, *args, argnums=(0, 1)):
  return jax.grad(lambda *a: jnp.sum(f(*a)), argnums)(*args)


def assert_close(got, want, **tol):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(f64(g), f64(w), **(tol or TOL))


# ---------------------------------------------------------------------------
# focal loss against optax


@pytest.mark.sweep
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
def test_focal_matches_optax_soft_labels(gamma, alpha):
  z, y = inputs()
  ours = lambda z, y, a, g: focal(z, y, alpha=a, gamma=g)
  peer = lambda z, y, a, g: optax.losses.sigmoid_focal_loss(z, y, alpha=a, gamma=g)
  args = (z, y, None if alpha is None else jnp.float32(alpha), jnp.float32(gamma))
  assert_close(ours(*args), peer(*args))
  argnums = (0, 1, 3) if alpha is None else (0, 1, 2, 3)
  assert_close(grads(ours, *args, argnums=argnums), grads(peer, *args, argnums=argnums))


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_focal_hard_labels_logit_gradient_matches_optax(gamma):
  z, y = inputs(hard=True)
  ours = lambda z: focal(z, y, alpha=0.25, gamma=gamma)
  peer = lambda z: optax.losses.sigmoid_focal_loss(z, y, alpha=0.25, gamma=gamma)
  assert_close(ours(z), peer(z))
  assert_close(grads(ours, z, argnums=0), grads(peer, z, argnums=0))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_label_gradient_at_hard_labels_is_the_derivative(gamma):
  # optax's autodiff drops d(1 - p_t)/dy where a weight of its logsumexp is
  # 0 (y = 0 or 1); jaxsmx gives the one-sided derivative: the limit of
  # optax's own gradient from inside [0, 1]
  z = np.array([5.0, -1.0, 2.0, -3.0])
  y = np.array([1.0, 1.0, 0.0, 0.0])
  inside = y + 1e-12 * np.where(y == 1, -1.0, 1.0)
  with jax.enable_x64(True):
    peer = lambda y: optax.losses.sigmoid_focal_loss(z, y, gamma=gamma)
    limit = np.asarray(grads(peer, inside, argnums=0))
    got = np.asarray(grads(lambda y: focal(z, y, gamma=gamma), y, argnums=0))
    np.testing.assert_allclose(got, limit, rtol=1e-9)
    at_the_edge = np.asarray(grads(peer, y, argnums=0))
    assert not np.allclose(at_the_edge, limit, rtol=1e-3)  # the difference is real


def test_focal_broadcasts_labels_alpha_and_gamma():
  z, y = inputs()
  alpha = jnp.linspace(0.1, 0.9, 5, dtype=jnp.float32)
  gamma = jnp.array([[0.0], [0.5], [1.0], [2.0], [3.0], [0.25]], jnp.float32)
  ours = lambda z, y, a, g: focal(z, y, alpha=a, gamma=g)
  peer = lambda z, y, a, g: optax.losses.sigmoid_focal_loss(z, y, alpha=a, gamma=g)
  args = (z, y[0], alpha, gamma)
  assert ours(*args).shape == (6, 5)
  assert_close(ours(*args), peer(*args))
  gs = grads(ours, *args, argnums=(0, 1, 2, 3))
  assert [g.shape for g in gs] == [(6, 5), (5,), (5,), (6, 1)]
  assert_close(gs, grads(peer, *args, argnums=(0, 1, 2, 3)))


def test_focal_vjp_matches_autodiff_in_float64():
  z, y = inputs(seed=3)
  ref = lambda z, y, g: optax.losses.sigmoid_focal_loss(z, y, alpha=0.3, gamma=g)
  with jax.enable_x64(True):
    args = (z.astype(np.float64), y.astype(np.float64), np.float64(1.5))
    f = lambda z, y, g: focal(z, y, alpha=0.3, gamma=g)
    assert_vjp_matches(f, ref, args, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_focal_infinite_logits_with_their_label_cost_zero(gamma):
  z = jnp.array([INF, -INF, INF, -INF], jnp.float32)
  y = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
  loss = focal(z, y, gamma=gamma)
  np.testing.assert_array_equal(loss, [0.0, 0.0, INF, INF])
  gz, gy = grads(lambda z, y: focal(z, y, gamma=gamma), z, y)
  np.testing.assert_array_equal(gz, [0.0, 0.0, 1.0, -1.0])
  assert not np.any(np.isnan(gy))
  # optax gives NaN gradients there (and a NaN value at gamma = 0)
  peer = grads(
    lambda z: optax.losses.sigmoid_focal_loss(z, y, gamma=gamma)[:2], z, argnums=0
  )
  assert np.all(np.isnan(peer[:2]))


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.999, 2.0])
def test_focal_large_logits_are_exact_in_float32(gamma):
  # beyond |z| ~ 88 the float32 sigmoid underflows; the loss and gradients
  # still follow their float64 values (or their limits)
  z = np.array([20.0, -20.0, 40.0, -40.0, 90.0, -90.0, 1e20, -1e20, 15.0, -15.0])
  y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.7, 0.2])
  f = lambda z, y: focal(z, y, alpha=0.25, gamma=gamma)
  v32 = f(z.astype(np.float32), y.astype(np.float32))
  g32 = grads(f, z.astype(np.float32), y.astype(np.float32))
  with jax.enable_x64(True):
    v64, g64 = f(z, y), grads(f, z, y)
  tiny = 1e-37  # float32 underflows below (subnormals)
  np.testing.assert_allclose(f64(v32), v64, rtol=2e-6, atol=tiny)
  for a, b in zip(g32, g64, strict=True):
    assert np.all(np.isfinite(f64(a)))
    np.testing.assert_allclose(f64(a), b, rtol=2e-5, atol=tiny)


def test_focal_gamma_below_one_has_finite_gradient_and_hessian():
  # optax's own test: extreme logits, gamma = 0.5
  z = jnp.array([100.0, -100.0, 75.0, -75.0, 50.0, -50.0])
  y = jnp.array([0.9, 0.1, 0.8, 0.2, 1.0, 0.0])
  f = lambda z: jnp.sum(focal(z, y, gamma=0.5))
  assert np.all(np.isfinite(jax.grad(f)(z)))
  assert np.all(np.isfinite(jax.hessian(f)(z)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_hessian_matches_optax(gamma):
  z, y = inputs((3, 4), seed=4)
  for i, x in enumerate((z, y)):

    def args(x, i=i):
      return (x, y) if i == 0 else (z, x)

    ours = lambda x, args=args: jnp.sum(focal(*args(x), alpha=0.3, gamma=gamma))
    peer = lambda x, args=args: jnp.sum(
      optax.losses.sigmoid_focal_loss(*args(x), alpha=0.3, gamma=gamma)
    )
    np.testing.assert_allclose(
      jax.hessian(ours)(x), jax.hessian(peer)(x), rtol=1e-4, atol=1e-6
    )


def test_focal_check_grads_and_transforms():
  z, y = inputs((3, 4), seed=5)
  f = lambda z, y: focal(z, y, alpha=0.25, gamma=1.5)
  with jax.enable_x64(True):
    check_grads(
      f, (z.astype(np.float64), y.astype(np.float64)), order=2, modes=("rev",)
    )
  want = f(z, y)
  assert_close(jax.jit(f)(z, y), want)
  assert_close(jax.vmap(f)(z, y), want)
  assert_close(jax.vmap(jax.grad(lambda z, y: f(z, y).sum()))(z, y), grads(f, z, y)[0])


def test_focal_runs_under_strict_promotion_and_keeps_dtypes():
  z, y = inputs()
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    for dtype in (jnp.bfloat16, jnp.float32):
      zl = z.astype(dtype)
      loss = focal(zl, y, alpha=0.25, gamma=jnp.float32(2.0))
      assert loss.dtype == dtype
      gs = grads(
        lambda *a: focal(a[0], a[1], alpha=a[2], gamma=a[3]).astype(jnp.float32),
        zl,
        y,
        jnp.float32(0.25),
        jnp.float32(2.0),
        argnums=(0, 1, 2, 3),
      )
      assert [g.dtype for g in gs] == [dtype, jnp.float32, jnp.float32, jnp.float32]
    focal(z, y[0].astype(np.int32), gamma=2)  # integer labels and gamma


def test_focal_gamma_zero_is_weighted_bce():
  z, y = inputs(seed=6)
  assert_close(focal(z, y, gamma=0.0), bce(z, y))
  assert_close(focal(z, y, alpha=1.0, gamma=0.0), bce(z, y) * y)


def test_focal_errors_say_what_arrived():
  z, y = inputs()
  with pytest.raises(ValueError, match=r"broadcast.*gamma \(3,\)"):
    focal(z, y, gamma=jnp.ones(3))
  with pytest.raises(TypeError, match=r"alpha must be a real number"):
    focal(z, y, alpha=jnp.array([True]))
  with pytest.raises(TypeError, match=r"logits must be real"):
    focal(z.astype(np.complex64), y)


# ---------------------------------------------------------------------------
# pos_weight against torch


def torch_bce(z, y, pos_weight):
  torch = pytest.importorskip("torch")
  tz, ty = (torch.tensor(np.asarray(a), requires_grad=True) for a in (z, y))
  loss = torch.nn.functional.binary_cross_entropy_with_logits(
    tz, ty, pos_weight=torch.tensor(np.asarray(pos_weight)), reduction="none"
  )
  loss.sum().backward()
  return loss.detach().numpy(), tz.grad.numpy(), ty.grad.numpy()  # type: ignore[union-attr]


def plain_weighted_bce(z, y, w):
  return -w * y * jax.nn.log_sigmoid(z) - (1 - y) * jax.nn.log_sigmoid(-z)


@pytest.mark.parametrize("shape", [(5,), (), (6, 1), (6, 5)])
def test_pos_weight_matches_torch(shape):
  z, y = inputs()
  w = (rng(7).random(shape) * 3).astype(np.float32)
  f = lambda z, y, w: bce(z, y, pos_weight=w)
  loss, gz, gy = torch_bce(z, y, np.broadcast_to(w, z.shape).copy())
  assert_close(f(z, y, w), loss)
  got = grads(f, z, y, w, argnums=(0, 1, 2))
  assert_close(got[:2], (gz, gy))
  # torch refuses to differentiate pos_weight; jaxsmx gives its gradient
  assert got[2].shape == w.shape
  assert_close(got[2], grads(plain_weighted_bce, z, y, w, argnums=2))


def test_pos_weight_one_is_the_plain_loss():
  z, y = inputs(seed=8)
  assert_close(bce(z, y, pos_weight=jnp.float32(1.0)), bce(z, y))
  assert_close(
    grads(lambda z, y: bce(z, y, pos_weight=jnp.ones(5)), z, y), grads(bce, z, y)
  )


def test_pos_weight_vjp_hessian_and_transforms():
  z, y = inputs((3, 4), seed=9)
  w = (rng(9).random(4) * 2).astype(np.float32)
  with jax.enable_x64(True):
    args = tuple(a.astype(np.float64) for a in (z, y, w))
    f = lambda z, y, w: bce(z, y, pos_weight=w)
    assert_vjp_matches(f, plain_weighted_bce, args, rtol=1e-12, atol=1e-12)
    check_grads(f, args, order=2, modes=("rev",))
  f = lambda z: jnp.sum(bce(z, y, pos_weight=w))
  np.testing.assert_allclose(
    jax.hessian(f)(z),
    jax.hessian(lambda z: jnp.sum(plain_weighted_bce(z, y, w)))(z),
    rtol=1e-5,
    atol=1e-6,
  )
  assert_close(
    jax.vmap(lambda z, y: bce(z, y, pos_weight=w))(z, y), bce(z, y, pos_weight=w)
  )


def test_pos_weight_infinite_logits():
  z = jnp.array([INF, -INF, INF, -INF], jnp.float32)
  y = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
  w = jnp.array([2.0, 2.0, 2.0, 0.0], jnp.float32)
  loss = bce(z, y, pos_weight=w)
  np.testing.assert_array_equal(loss, [0.0, 0.0, INF, 0.0])  # w = 0 drops the term
  gz, gy, gw = grads(
    lambda *a: bce(a[0], a[1], pos_weight=a[2]), z, y, w, argnums=(0, 1, 2)
  )
  np.testing.assert_array_equal(gz, [0.0, 0.0, 1.0, 0.0])
  np.testing.assert_array_equal(gw, [0.0, 0.0, 0.0, INF])
  assert not np.any(np.isnan(gy))


def test_pos_weight_under_strict_promotion_and_dtypes():
  z, y = inputs()
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    w = jnp.ones(5, jnp.float32)
    zb = z.astype(jnp.bfloat16)
    assert bce(zb, y, pos_weight=w).dtype == jnp.bfloat16
    gs = grads(
      lambda *a: bce(a[0], a[1], pos_weight=a[2]).astype(jnp.float32),
      zb,
      y,
      w,
      argnums=(0, 1, 2),
    )
    assert [g.dtype for g in gs] == [jnp.bfloat16, jnp.float32, jnp.float32]
    bce(z, y, pos_weight=jnp.array(3))  # an integer weight


def test_pos_weight_errors_say_what_arrived():
  z, y = inputs()
  with pytest.raises(
    ValueError, match=r"pos_weight must broadcast to the loss's shape \(5,\)"
  ):
    bce(z[0], y[0], pos_weight=jnp.ones((6, 5)))
  with pytest.raises(TypeError, match=r"pos_weight must be a real number"):
    bce(z, y, pos_weight=jnp.array(True))
