"""class_weights= (torch's ``weight=``) on the integer-label cross-entropy and
on the fused linear loss: against torch, against plain autodiff of the
definition (class masks, smoothing, ignored labels), and their edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsmx

ice = jaxsmx.softmax_cross_entropy_with_integer_labels
N, C = 9, 7


def _problem(seed=0, ignored=True):
  r = np.random.default_rng(seed)
  z = r.normal(size=(N, C)).astype(np.float32) * 2.0
  c = r.integers(0, C, N).astype(np.int32)
  if ignored:
    c[[2, 5]] = -100
  w = r.uniform(0.2, 3.0, C).astype(np.float32)
  return z, c, w


def _plain(z, c, w, alpha=0.0, where=None, ignore_index=-100):
  """The definition by plain autodiff: each class's term weighted by w_k,
  smoothing over the unmasked classes, masked = sliced."""
  zz = z if where is None else jnp.where(where, z, -jnp.inf)
  lp = jax.nn.log_softmax(zz)
  keep = jnp.ones(z.shape, bool) if where is None else where
  lp = jnp.where(keep, lp, 0.0)
  counted = c != ignore_index
  tc = jnp.where(counted, c, 0)
  nll = -jnp.take_along_axis(lp, tc[:, None], 1)[:, 0] * w[tc]
  count = jnp.sum(keep, -1)
  smooth = -jnp.sum(lp * w, -1) / count
  return jnp.where(counted, (1 - alpha) * nll + alpha * smooth, 0.0)


@pytest.mark.parametrize("alpha", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [None, -100])
def test_integer_labels_match_torch_weight(alpha, ignore_index):
  torch = pytest.importorskip("torch")
  z, c, w = _problem(ignored=ignore_index is not None)
  ct = np.random.default_rng(1).normal(size=N).astype(np.float32)
  kw = {"label_smoothing": alpha, "class_weights": w}
  if ignore_index is not None:
    kw["ignore_index"] = ignore_index

  def ours(z, w):
    return ice(z, c, **{**kw, "class_weights": w})

  value, pull = jax.vjp(ours, jnp.asarray(z), jnp.asarray(w))
  dz, _ = pull(jnp.asarray(ct))
  zt = torch.tensor(z, requires_grad=True)
  want = torch.nn.functional.cross_entropy(
    zt,
    torch.tensor(c, dtype=torch.long),
    weight=torch.tensor(w),
    label_smoothing=alpha,
    ignore_index=-100 if ignore_index is None else ignore_index,
    reduction="none",
  )
  want.backward(torch.tensor(ct))
  np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_torch_mean_is_the_sum_over_the_counted_class_weights(alpha):
  torch = pytest.importorskip("torch")
  z, c, w = _problem()
  losses = ice(z, c, label_smoothing=alpha, ignore_index=-100, class_weights=w)
  counted = c != -100
  mean = jnp.sum(losses) / np.sum(w[c[counted]])
  want = torch.nn.functional.cross_entropy(
    torch.tensor(z),
    torch.tensor(c, dtype=torch.long),
    weight=torch.tensor(w),
    label_smoothing=alpha,
    ignore_index=-100,
  )
  np.testing.assert_allclose(mean, want.numpy(), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("masked", [False, True])
def test_value_and_both_gradients_match_plain_autodiff(alpha, masked):
  z, c, w = (np.asarray(a, np.float64) for a in _problem(3))
  c = c.astype(np.int32)
  where = None
  if masked:
    where = np.random.default_rng(4).random((N, C)) > 0.35
    where[:, 0] = True
    c = np.where(c >= 0, 0, c).astype(np.int32)  # labels on kept classes
  ct = np.random.default_rng(5).normal(size=N)
  with jax.enable_x64(True):
    kw = {"label_smoothing": alpha, "ignore_index": -100, "where": where}

    def ours(z, w):
      return ice(z, c, **kw, class_weights=w)

    def plain(z, w):
      return _plain(z, c, w, alpha, where)

    got, pull = jax.vjp(ours, jnp.asarray(z), jnp.asarray(w))
    want, pull_want = jax.vjp(plain, jnp.asarray(z), jnp.asarray(w))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for a_, b_ in zip(pull(jnp.asarray(ct)), pull_want(jnp.asarray(ct)), strict=True):
      np.testing.assert_allclose(a_, b_, rtol=1e-12, atol=1e-12)


def test_unit_weights_are_the_unweighted_loss():
  z, c, _ = _problem()
  ones = np.ones(C, np.float32)
  for alpha in (0.0, 0.1):
    kw = {"label_smoothing": alpha, "ignore_index": -100}
    np.testing.assert_allclose(
      ice(z, c, **kw, class_weights=ones), ice(z, c, **kw), rtol=1e-6
    )
    g = jax.grad(lambda z, kw=kw: jnp.sum(ice(z, c, **kw, class_weights=ones)))(z)
    g_plain = jax.grad(lambda z, kw=kw: jnp.sum(ice(z, c, **kw)))(z)
    np.testing.assert_allclose(g, g_plain, rtol=1e-6, atol=1e-7)


def test_tuple_axes_index_the_weights_by_the_flat_class():
  r = np.random.default_rng(6)
  z = r.normal(size=(4, 3, 5, 2)).astype(np.float32)  # classes on axes 1 and 3
  c = r.integers(0, 6, (4, 5)).astype(np.int32)
  w = r.uniform(0.5, 2.0, 6).astype(np.float32)
  got = ice(z, c, axis=(1, 3), label_smoothing=0.1, class_weights=w)
  flat = jnp.moveaxis(z, (1, 3), (2, 3)).reshape(4, 5, 6)
  want = ice(flat, c, label_smoothing=0.1, class_weights=w)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_class_of_weight_zero_adds_zero_even_at_minus_inf():
  torch = pytest.importorskip("torch")
  z, c, w = _problem(ignored=False)
  z[:, 3] = -np.inf
  c = np.where(c == 3, 1, c).astype(np.int32)
  w[3] = 0.0
  loss, grads = jax.value_and_grad(
    lambda z, w: jnp.sum(ice(z, c, label_smoothing=0.2, class_weights=w)), (0, 1)
  )(z, w)
  assert np.isfinite(loss) and np.isfinite(grads[0]).all()
  assert np.isfinite(np.delete(np.asarray(grads[1]), 3)).all()
  assert grads[1][3] == np.inf  # the loss grows without bound as w_3 leaves 0
  want = torch.nn.functional.cross_entropy(
    torch.tensor(z),
    torch.tensor(c, dtype=torch.long),
    weight=torch.tensor(w),
    label_smoothing=0.2,
    reduction="none",
  )
  assert torch.isnan(want).all()  # torch: 0 * -inf


def test_dropped_rows_and_invalid_labels():
  z, c, w = _problem()
  c[0] = C + 3  # out of range: NaN in its loss and in the weights' gradient
  loss = ice(z, c, ignore_index=-100, class_weights=w)
  assert np.isnan(loss[0]) and np.isfinite(np.delete(np.asarray(loss), 0)).all()
  assert loss[2] == 0 and loss[5] == 0
  dw = jax.grad(lambda w: jnp.sum(ice(z, c, ignore_index=-100, class_weights=w)))(w)
  assert np.isnan(dw).all()
  c[0] = -100
  dw = jax.grad(lambda w: jnp.sum(ice(z, c, ignore_index=-100, class_weights=w)))(w)
  counted = c != -100
  # without smoothing d/dw_k sums the nll of the counted examples of class k
  nll = ice(z, c, ignore_index=-100)
  want = np.bincount(c[counted], np.asarray(nll)[counted], minlength=C)
  np.testing.assert_allclose(dw, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_logits_and_weights(dtype):
  z, c, w = _problem()
  z16, w16 = jnp.asarray(z, dtype), jnp.asarray(w, dtype)
  f = lambda z, w: ice(z, c, ignore_index=-100, label_smoothing=0.1, class_weights=w)
  out, (dz, dw) = jax.value_and_grad(lambda z, w: jnp.sum(f(z, w)), (0, 1))(z16, w16)
  assert out.dtype == dtype and dz.dtype == dtype and dw.dtype == dtype
  want = f(z16.astype(jnp.float32), w16.astype(jnp.float32))
  np.testing.assert_allclose(f(z16, w16).astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_jit_vmap_and_integer_weights():
  z, c, w = _problem()
  f = lambda z, c, w: ice(z, c, ignore_index=-100, class_weights=w)
  np.testing.assert_allclose(jax.jit(f)(z, c, w), f(z, c, w), rtol=1e-6)
  batched = jax.vmap(f, (0, 0, None))(z[None].repeat(2, 0), c[None].repeat(2, 0), w)
  np.testing.assert_allclose(batched[1], f(z, c, w), rtol=1e-6)
  counts = np.arange(1, C + 1, dtype=np.int32)
  np.testing.assert_allclose(
    f(z, c, counts), f(z, c, counts.astype(np.float32)), rtol=1e-6
  )


def test_class_weights_errors_say_what_arrived():
  z, c, w = _problem()
  with pytest.raises(ValueError, match=r"per class.*\(7,\).*got shape \(6,\)"):
    ice(z, c, class_weights=w[:6])
  with pytest.raises(ValueError, match=r"\(12,\) for logits \(2, 3, 4\), axis \(1, 2"):
    ice(
      np.zeros((2, 3, 4), np.float32),
      np.zeros(2, np.int32),
      axis=(1, 2),
      class_weights=np.ones(4, np.float32),
    )
  with pytest.raises(TypeError, match=r"class_weights must be real"):
    ice(z, c, class_weights=w.astype(np.complex64))


# ---------------------------------------------------------------------------
# the fused linear loss

linear = jaxsmx.linear_softmax_cross_entropy
NL, H, V = 40, 6, 50


def _linear_problem(seed=7):
  r = np.random.default_rng(seed)
  x = r.normal(size=(NL, H)).astype(np.float32)
  w = (r.normal(size=(H, V)) * 0.7).astype(np.float32)
  c = r.integers(0, V, NL).astype(np.int32)
  c[[1, 8, 9]] = -100
  cw = r.uniform(0.2, 3.0, V).astype(np.float32)
  return x, w, c, cw


@pytest.mark.sweep
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha", [0.0, 0.15])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_linear_matches_torch_weight(reduction, alpha, chunk_size):
  torch = pytest.importorskip("torch")
  x, w, c, cw = _linear_problem()

  def ours(x, w):
    return linear(
      x,
      w,
      c,
      ignore_index=-100,
      label_smoothing=alpha,
      reduction=reduction,
      class_weights=cw,
      chunk_size=chunk_size,
    )

  value, pull = jax.vjp(ours, jnp.asarray(x), jnp.asarray(w))
  ct = np.random.default_rng(2).normal(size=value.shape).astype(np.float32)
  dx, dw = pull(jnp.asarray(ct))
  xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
  want = torch.nn.functional.cross_entropy(
    xt @ wt,
    torch.tensor(c, dtype=torch.long),
    weight=torch.tensor(cw),
    ignore_index=-100,
    label_smoothing=alpha,
    reduction=reduction,
  )
  want.backward(torch.tensor(ct))
  np.testing.assert_allclose(value, want.detach().numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-5, atol=1e-5)


def _dense(x, w, c, cw, alpha, reduction, where=None, weights=None):
  """The fused loss by dense autodiff: the integer-label definition above on
  x @ w, then torch's reduction with per-example weights."""
  losses = _plain(x @ w, c, cw, alpha, where)
  omega = jnp.ones(c.shape, x.dtype) if weights is None else weights
  if reduction == "none":
    return losses * omega
  if reduction == "sum":
    return jnp.sum(losses * omega)
  counted = c != -100
  if where is not None:
    counted = counted & where[jnp.where(counted, c, 0)]
  return jnp.sum(losses * omega) / jnp.sum(jnp.where(counted, omega * cw[c], 0.0))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_linear_every_gradient_matches_dense_autodiff(reduction):
  """x, w, class weights and per-example weights, with a vocabulary mask
  (a masked label drops its row) and smoothing, in float64."""
  x, w, c, cw = (np.asarray(a, np.float64) for a in _linear_problem(3))
  c = c.astype(np.int32)
  r = np.random.default_rng(4)
  where = r.random(V) > 0.25
  c[2] = np.flatnonzero(~where)[0]  # a masked target: dropped
  omega = r.uniform(0.5, 2.0, NL)
  kw = dict(ignore_index=-100, label_smoothing=0.2, reduction=reduction)
  with jax.enable_x64(True):

    def ours(x, w, cw, omega):
      return linear(x, w, c, where=where, weights=omega, class_weights=cw, **kw)

    def dense(x, w, cw, omega):
      keep = jnp.where(c == -100, True, where[jnp.where(c == -100, 0, c)])
      dropped = jnp.where(keep, c, -100)
      return _dense(x, w, dropped, cw, 0.2, reduction, jnp.asarray(where), omega)

    args = tuple(map(jnp.asarray, (x, w, cw, omega)))
    got, pull = jax.vjp(ours, *args)
    want, pull_want = jax.vjp(dense, *args)
    ct = jnp.asarray(r.normal(size=got.shape))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for a_, b_ in zip(pull(ct), pull_want(ct), strict=True):
      np.testing.assert_allclose(a_, b_, rtol=1e-9, atol=1e-12)


def test_linear_class_weights_equal_the_integer_label_loss():
  x, w, c, cw = _linear_problem()
  kw = dict(ignore_index=-100, label_smoothing=0.1, class_weights=cw)
  np.testing.assert_allclose(
    linear(x, w, c, **kw), ice(x @ w, c, **kw), rtol=1e-5, atol=1e-6
  )


def test_linear_mean_with_nothing_counted_is_zero():
  x, w, c, cw = _linear_problem()
  c[:] = -100
  f = lambda x, cw: linear(
    x, w, c, ignore_index=-100, reduction="mean", class_weights=cw
  )
  value, (dx, dcw) = jax.value_and_grad(f, (0, 1))(x, cw)
  assert value == 0 and not np.any(dx) and not np.any(dcw)


def test_linear_class_weights_errors_say_what_arrived():
  x, w, c, cw = _linear_problem()
  with pytest.raises(ValueError, match=r"\(50,\) for w \(6, 50\).*got shape \(49,\)"):
    linear(x, w, c, class_weights=cw[:49])
