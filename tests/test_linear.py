"""Tests for linear_softmax_cross_entropy (the package jaxsmx/_linear/).

Every option is checked, in value and in the closed-form gradients with
respect to x, w and bias, against two references: the dense composition the
function is defined as (jaxsmx's integer-label cross-entropy on the capped
logits, plus the z-loss), and plain autodiff of a jnp formula.
"""

from __future__ import annotations

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxsmx
from jaxsmx._linear import _api, _per_example, _reduced, _rows, _tiling

lce = jaxsmx.linear_softmax_cross_entropy

N, H, V = 12, 8, 50
CHUNK = 16  # 3 full chunks and a tail of 2 columns
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------
# references and the comparison helper


def cap(u, softcap):
  return u if softcap is None else softcap * jnp.tanh(u / softcap)


def kept_rows(labels, where, ignore_index, vocab):
  """Rows whose label is in range, not ignored and not masked out."""
  kept = (labels >= 0) & (labels < vocab)
  if ignore_index is not None:
    kept &= labels != ignore_index
  if where is not None:
    kept &= where[jnp.clip(labels, 0, vocab - 1)]
  return kept


def composition(
  x,
  w,
  labels,
  *,
  bias=None,
  where=None,
  ignore_index=None,
  label_smoothing=0.0,
  z_loss=0.0,
  softcap=None,
):
  """The definition: integer-label CE on cap(x @ w + b), plus z_loss * lse^2."""
  u = jnp.matmul(x, w, precision=HIGHEST)
  z = cap(u if bias is None else u + bias, softcap)
  mask = None if where is None else jnp.broadcast_to(where, z.shape)
  loss = jaxsmx.softmax_cross_entropy_with_integer_labels(
    z,
    labels,
    where=mask,
    ignore_index=ignore_index,
    label_smoothing=label_smoothing,
  )
  if z_loss:
    lse = jaxsmx.logsumexp(z, axis=-1, where=mask)
    kept = kept_rows(labels, where, ignore_index, w.shape[1])
    loss = loss + jnp.where(kept, z_loss * lse**2, 0.0)
  return loss


def autodiff(
  x,
  w,
  labels,
  *,
  bias=None,
  where=None,
  ignore_index=None,
  label_smoothing=0.0,
  z_loss=0.0,
  softcap=None,
):
  """A plain jnp formula, differentiated by JAX (finite logits, some kept class)."""
  vocab = w.shape[1]
  u = jnp.matmul(x, w, precision=HIGHEST)
  z = cap(u if bias is None else u + bias, softcap)
  if where is not None:
    z = jnp.where(where, z, -jnp.inf)
  lse = jax.nn.logsumexp(z, axis=-1)
  z_t = jnp.take_along_axis(z, jnp.clip(labels, 0, vocab - 1)[..., None], -1)[..., 0]
  loss = (1.0 - label_smoothing) * (lse - z_t)
  if label_smoothing:
    count = vocab if where is None else jnp.sum(where)
    unmasked = z if where is None else jnp.where(where, z, 0.0)
    loss = loss + label_smoothing * (lse - jnp.sum(unmasked, -1) / count)
  loss = loss + z_loss * lse**2
  return jnp.where(kept_rows(labels, where, ignore_index, vocab), loss, 0.0)


def f64(a):
  return np.asarray(np.asarray(a).astype(np.float64))


def assert_close(got, want, rtol, what):
  """Elementwise |got - want| <= rtol * max|want| (NaNs must coincide)."""
  got, want = f64(got), f64(want)
  scale = np.nanmax(np.abs(want), initial=0.0) if np.any(np.isfinite(want)) else 1.0
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_matches(f, refs, args, rtol, seed=0):
  """f agrees with each reference in value and in jax.vjp (random cotangent).

  `refs` is one function or a tuple of them; all are jitted, which makes the
  eager references cheap to run.
  """
  out, f_vjp = jax.vjp(jax.jit(f), *args)
  ct = jax.random.normal(jax.random.key(seed), out.shape, out.dtype)
  got = f_vjp(ct)
  for ref in refs if isinstance(refs, tuple) else (refs,):
    ref_out, ref_vjp = jax.vjp(jax.jit(ref), *args)
    assert out.dtype == ref_out.dtype
    assert_close(out, ref_out, rtol, "value")
    for i, (a, b) in enumerate(zip(got, ref_vjp(ct), strict=True)):
      assert_close(a, b, rtol, f"cotangent of argument {i}")


def data(n=N, hidden=H, vocab=V, dtype=np.float32, seed=0, batch=None):
  """x, w, bias, labels and a vocabulary mask (about 1/5 masked)."""
  r = np.random.default_rng(seed)
  shape = (n,) if batch is None else batch
  x = jnp.asarray(r.normal(size=(*shape, hidden)), dtype)
  w = jnp.asarray(r.normal(size=(hidden, vocab)) * 0.7, dtype)
  b = jnp.asarray(r.normal(size=(vocab,)), dtype)
  labels = jnp.asarray(r.integers(0, vocab, size=shape), jnp.int32)
  where = jnp.asarray(r.random(vocab) > 0.2)
  return x, w, b, labels, where


OPTIONS = {
  "plain": {},
  "bias": {"bias": True},
  "where": {"where": True},
  "ignore_index": {"ignore_index": -100},
  "label_smoothing": {"label_smoothing": 0.1},
  "z_loss": {"z_loss": 0.05},
  "softcap": {"softcap": 2.0},
  "where+smoothing+ignore": {
    "where": True,
    "label_smoothing": 0.2,
    "ignore_index": -1,
  },
  "bias+z_loss+softcap": {"bias": True, "z_loss": 0.05, "softcap": 3.0},
  "all": {
    "bias": True,
    "where": True,
    "ignore_index": -100,
    "label_smoothing": 0.1,
    "z_loss": 0.05,
    "softcap": 3.0,
  },
}


def problem(options, dtype=np.float32, **kw):
  """(f, composition, autodiff, args, labels); f and the references are
  functions of (x, w[, bias])."""
  x, w, b, labels, where = data(dtype=dtype, **kw)
  opts = dict(options)
  use_bias = opts.pop("bias", False)
  if opts.pop("where", False):
    opts["where"] = where
    labels = labels.reshape(-1).at[0].set(int(np.flatnonzero(~where)[0]))
    labels = labels.reshape(x.shape[:-1])  # one example whose class is masked
  if "ignore_index" in opts:
    labels = labels.reshape(-1).at[1].set(opts["ignore_index"]).reshape(x.shape[:-1])
  args = (x, w, b) if use_bias else (x, w)

  def bind(fn, **extra):
    def g(x, w, b=None):
      return fn(x, w, labels, bias=b, **opts, **extra)

    return g

  return bind(lce, chunk_size=CHUNK), bind(composition), bind(autodiff), args, labels


# ---------------------------------------------------------------------------
# values and gradients of every option


@pytest.mark.parametrize("case", list(OPTIONS))
def test_matches_dense_composition_and_autodiff(case):
  f, composed, plain, args, _ = problem(OPTIONS[case])
  assert_matches(f, (composed, plain), args, RTOL[np.float32])


def test_float64_matches_to_1e12():
  with jax.enable_x64(True):
    f, ref, _, args, _ = problem(OPTIONS["all"], dtype=np.float64)
    assert_matches(f, ref, args, RTOL[np.float64])


@pytest.mark.parametrize("case", ["plain", "all"])
def test_batch_dims(case):
  f, ref, _, args, labels = problem(OPTIONS[case], batch=(2, 5))
  assert f(*args).shape == labels.shape == (2, 5)
  assert_matches(f, ref, args, RTOL[np.float32])


@pytest.mark.parametrize("chunk_size", [1, 7, 49, None])
def test_chunk_size_changes_nothing(chunk_size):
  x, w, b, labels, where = data()
  kw = dict(where=where, label_smoothing=0.1, z_loss=0.05, softcap=3.0)
  f = lambda x, w, b: lce(x, w, labels, bias=b, chunk_size=chunk_size, **kw)
  ref = lambda x, w, b: composition(x, w, labels, bias=b, **kw)
  assert_matches(f, ref, (x, w, b), RTOL[np.float32])


def test_default_chunk_rule():
  chunk = lambda size, n, hidden, vocab: _api._chunk(size, n, vocab)
  assert chunk(None, 4096, 512, 32768) == 1024  # 16 MiB block, divides V
  assert chunk(None, 1024, 64, 8192) == 256  # at most V / 32
  assert chunk(None, 8, 64, 50) == 50  # small V: one chunk
  assert chunk(None, 128, 64, 8192) == 8192  # 4 MiB logits: one chunk
  assert chunk(None, 4096, 512, 50257) % 128 == 0  # GPT-2: a short tail
  assert chunk(None, 10**6, 64, 32768) == 128  # at least 128
  assert chunk(None, 4096, 512, 131072) == 1024
  assert chunk(300, 16, 8, 50) == 50


def test_precision_argument():
  x, w, _, labels, _ = data()
  a = lce(x, w, labels, precision=HIGHEST)
  b = lce(x, w, labels, precision="highest")
  np.testing.assert_array_equal(a, b)
  assert_close(a, composition(x, w, labels), 1e-5, "value")


# ---------------------------------------------------------------------------
# reduced modes: reduction="sum" | "mean" and per-example weights


def reduce_dense(losses, labels, where, ignore_index, reduction, weights):
  """The dense reference of a reduction: sum_n omega_n L_n, over the total
  weight of the rows that count for "mean" (0 when none does)."""
  omega = jnp.ones(losses.shape) if weights is None else weights
  if reduction == "none":
    return losses * omega
  total = jnp.sum(omega * losses)
  if reduction == "sum":
    return total
  vocab = None if where is None else where.shape[0]
  counted = kept_rows(labels, where, ignore_index, vocab or 10**9)
  if where is not None:
    counted &= jnp.any(where)
  denom = jnp.sum(jnp.where(counted, omega, 0.0))
  return jnp.where(denom == 0, 0.0, total / jnp.where(denom == 0, 1.0, denom))


def reduced_problem(options, reduction, weighted, dtype=np.float32, **kw):
  """(f, dense, args): functions of (x, w[, bias], weights) or (x, w[, bias])."""
  _, _, _, args, labels = problem(options, dtype=dtype, **kw)
  opts = {k: v for k, v in options.items() if k != "bias"}
  _, _, _, _, where = data(dtype=dtype, **kw)
  if opts.pop("where", False):
    opts["where"] = where
  r = np.random.default_rng(7)
  omega = jnp.asarray(r.random(labels.shape) * 2, dtype)
  use_bias = len(args) == 3

  def split(a):
    a = list(a)
    om = a.pop() if weighted else None
    b = a.pop() if use_bias else None
    return a[0], a[1], b, om

  def f(*a):
    x, w, b, om = split(a)
    return lce(
      x,
      w,
      labels,
      bias=b,
      chunk_size=CHUNK,
      reduction=reduction,
      weights=om,
      **opts,
    )

  def dense(*a):
    x, w, b, om = split(a)
    losses = composition(x, w, labels, bias=b, **opts)
    return reduce_dense(
      losses, labels, opts.get("where"), opts.get("ignore_index"), reduction, om
    )

  return f, dense, args + ((omega,) if weighted else ())


@pytest.mark.sweep
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("case", list(OPTIONS))
def test_reductions_and_weights_match_dense(case, reduction, weighted):
  f, dense, args = reduced_problem(OPTIONS[case], reduction, weighted)
  assert_matches(f, dense, args, RTOL[np.float32])


@pytest.mark.sweep
@pytest.mark.parametrize("block", [1, 5, 6])
@pytest.mark.parametrize("case", ["plain", "all", "where+smoothing+ignore"])
def test_one_pass_row_blocks_change_nothing(case, block, monkeypatch):
  """The one-pass reduced kernel over several row blocks and a short tail."""
  monkeypatch.setattr(_tiling, "row_block", lambda n, vocab: block)
  monkeypatch.setattr(_tiling, "ROW_BLOCK_MIN", 1)
  jax.clear_caches()
  try:
    f, dense, args = reduced_problem(OPTIONS[case], "mean", True)
    assert _reduced._one_pass_applies(args[0], args[1], None, None)
    assert_matches(f, dense, args, RTOL[np.float32])
  finally:
    jax.clear_caches()


def test_row_block_rule():
  assert _tiling.row_block(4096, 8192) == 256
  assert _tiling.row_block(4096, 32768) == 128
  assert _tiling.row_block(4096, 131072) == 32
  assert _tiling.row_block(8192, 256000) == 16
  assert _tiling.row_block(4, 50) == 4
  assert _tiling.row_block(10**6, 10**7) == 8


def test_one_pass_only_where_its_row_blocks_are_long():
  """A wide vocabulary (blocks under 128 rows) takes the chunked kernel."""
  x = jnp.zeros((4096, 8), jnp.float32)
  assert _reduced._one_pass_applies(x, jnp.zeros((8, 32768), jnp.float32), None, None)
  assert not _reduced._one_pass_applies(
    x, jnp.zeros((8, 131072), jnp.float32), None, None
  )
  # a batch that fits in one block
  assert _reduced._one_pass_applies(
    x[:64], jnp.zeros((8, 65536), jnp.float32), None, None
  )


def test_reduced_float64_and_batch_dims():
  with jax.enable_x64(True):
    f, dense, args = reduced_problem(OPTIONS["all"], "mean", True, dtype=np.float64)
    assert_matches(f, dense, args, RTOL[np.float64])
  f, dense, args = reduced_problem(OPTIONS["all"], "sum", True, batch=(3, 4))
  assert f(*args).shape == ()
  assert_matches(f, dense, args, RTOL[np.float32])


def test_mean_of_a_batch_that_nothing_counts_is_zero():
  x, w, b, labels, _ = data()
  ignored = jnp.full_like(labels, -100)
  for kw in (
    dict(ignore_index=-100),
    dict(where=jnp.zeros(V, bool)),
    dict(weights=jnp.zeros(N)),
  ):
    lab = ignored if "ignore_index" in kw else labels
    f = lambda x, w, b, lab=lab, kw=kw: lce(x, w, lab, bias=b, reduction="mean", **kw)
    value, grads = jax.value_and_grad(f, (0, 1, 2))(x, w, b)
    assert value == 0, kw
    for g in grads:
      assert np.all(g == 0), kw


def test_reduced_out_of_range_label_is_nan():
  x, w, _, labels, _ = data()
  for red in ("sum", "mean"):
    f = lambda x, red=red: lce(x, w, labels.at[2].set(V), reduction=red)
    value, dx = jax.value_and_grad(f)(x)
    assert np.isnan(value) and np.all(np.isnan(dx[2]))


def test_reduced_jit_vmap_hessian():
  x, w, b, labels, where = data(batch=(3, 4))
  kw = dict(bias=b, where=where, label_smoothing=0.1, z_loss=0.01, softcap=3.0)
  omega = jnp.linspace(0.5, 1.5, 12).reshape(3, 4)
  for red in ("sum", "mean"):
    f = lambda x, w, om, red=red: lce(
      x, w, labels[0], chunk_size=CHUNK, reduction=red, weights=om, **kw
    )
    dense = lambda x, w, om, red=red: reduce_dense(
      composition(x, w, labels[0], **kw), labels[0], where, None, red, om
    )
    ws = jnp.stack([w, 2.0 * w, -w])
    want = jax.vmap(dense)(x, ws, omega)
    assert_close(jax.jit(jax.vmap(f))(x, ws, omega), want, 1e-5, "jit(vmap)")
    total = lambda ws, fn: jnp.sum(jax.vmap(fn)(x, ws, omega))
    got = jax.jit(jax.grad(total), static_argnums=1)(ws, f)
    ref = jax.grad(total)(ws, dense)
    assert_close(got, ref, 1e-5, "grad of vmap")
  x, w, b, labels, where = data(n=2, hidden=3, vocab=7)
  where = where.at[labels].set(True)
  kw = dict(bias=b, where=where, label_smoothing=0.1, z_loss=0.05, softcap=2.0)
  for red in ("sum", "mean"):
    f = lambda x, red=red: lce(x, w, labels, chunk_size=3, reduction=red, **kw)
    ref = lambda x, red=red: reduce_dense(
      autodiff(x, w, labels, **kw), labels, where, None, red, None
    )
    got = jax.jit(jax.hessian(f))(x)
    assert_close(got, jax.jit(jax.hessian(ref))(x), 1e-5, f"hessian, {red}")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_reduced_16_bit_inputs(dtype):
  f, dense, args = reduced_problem(OPTIONS["all"], "mean", True, dtype=dtype)
  out, vjp = jax.vjp(f, *args)
  assert out.dtype == dtype
  grads = vjp(jnp.ones_like(out))
  assert [g.dtype for g in grads] == [dtype] * len(args)
  with jax.enable_x64(True):
    args64 = [jnp.asarray(f64(a)) for a in args]
    want, ref_vjp = jax.vjp(dense, *args64)
    want_grads = ref_vjp(jnp.ones_like(want))
  e = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(f64(out), f64(want), rtol=e, atol=0)
  for g, r in zip(grads, want_grads, strict=True):
    r = f64(r)
    np.testing.assert_allclose(f64(g), r, rtol=e, atol=1e-5 * np.abs(r).max())


def _wrong_mean_normaliser():
  """The reduced rule with a deliberately wrong normaliser: every row counts."""
  real = _rows.row_weights

  def wrong(labels, where, weights, vocab, opts, ct, cwt=None):
    r, counted, denom = real(labels, where, weights, vocab, opts, ct, cwt)
    if denom is None:
      return r, counted, denom
    n = jnp.asarray(labels.shape[0], ct)
    return r * denom / n, counted, n

  return wrong


def test_a_wrong_reduced_rule_is_caught(monkeypatch):
  f, dense, args = reduced_problem(OPTIONS["ignore_index"], "mean", False)
  assert_matches(f, dense, args, RTOL[np.float32])
  monkeypatch.setattr(_rows, "row_weights", _wrong_mean_normaliser())
  jax.clear_caches()
  with pytest.raises(AssertionError):
    assert_matches(f, dense, args, RTOL[np.float32])
  jax.clear_caches()


# ---------------------------------------------------------------------------
# edge rules, as in softmax_cross_entropy_with_integer_labels


def test_out_of_range_labels_are_nan_in_value_and_gradient():
  x, w, b, labels, _ = data()
  bad = labels.at[2].set(V).at[5].set(-1)
  good = np.ones(N, bool)
  good[[2, 5]] = False

  @jax.jit
  def value_and_grads(x, w, b):
    out = {}
    for name, fn in (("ours", lce), ("dense", composition)):
      loss = functools.partial(fn, labels=bad, z_loss=0.01)
      total = lambda x, w, b, loss=loss: jnp.sum(loss(x, w, bias=b))
      out[name] = loss(x, w, bias=b), jax.grad(total, (0, 1, 2))(x, w, b)
    return out

  res = value_and_grads(x, w, b)
  (out, (dx, dw, db)), (ref, (rx, rw, rb)) = res["ours"], res["dense"]
  assert np.all(np.isnan(out[~good])) and np.all(np.isnan(ref[~good]))
  assert_close(out[good], ref[good], 1e-5, "value")
  assert np.all(np.isnan(dx[~good])) and np.all(np.isfinite(dx[good]))
  assert_close(dx[good], rx[good], 1e-5, "dx of valid rows")
  # one NaN row reaches every entry of dw and db, as in dense autodiff
  assert np.all(np.isnan(dw)) and np.all(np.isnan(rw))
  assert np.all(np.isnan(db)) and np.all(np.isnan(rb))


def test_ignored_and_masked_out_labels_are_dropped():
  x, w, _, labels, where = data()
  masked_class = int(np.flatnonzero(~where)[0])
  labels = labels.at[0].set(-100).at[1].set(masked_class)
  f = lambda x: lce(x, w, labels, where=where, ignore_index=-100, z_loss=0.1)
  kept = kept_rows(labels, where, -100, V)
  assert not kept[0] and not kept[1]
  out = f(x)
  np.testing.assert_array_equal(out == 0, ~kept)
  dx = jax.grad(lambda x: jnp.sum(f(x)))(x)
  assert np.all(dx[~kept] == 0) and np.all(np.abs(dx[kept]).sum(-1) > 0)


def test_fully_masked_vocabulary_gives_zero():
  x, w, b, labels, _ = data()
  labels = labels.at[0].set(V)  # not read: the slice is empty
  none = jnp.zeros(V, bool)
  f = lambda x, w, b: jnp.sum(
    lce(
      x,
      w,
      labels,
      bias=b,
      where=none,
      z_loss=0.1,
      label_smoothing=0.1,
      chunk_size=CHUNK,
    )
  )
  assert f(x, w, b) == 0
  for g in jax.grad(f, (0, 1, 2))(x, w, b):
    assert np.all(g == 0)


def test_check_labels_reports_bad_labels():
  x, w, _, labels, where = data()
  checked = checkify.checkify(
    functools.partial(lce, check_labels=True), errors=checkify.user_checks
  )
  err, _ = checked(x, w, labels.at[3].set(V))
  with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, 50\)"):
    err.throw()
  masked_class = int(np.flatnonzero(~where)[0])
  err, _ = checked(x, w, labels.at[3].set(masked_class), where=where)
  with pytest.raises(checkify.JaxRuntimeError, match="masks out"):
    err.throw()
  err, _ = checked(x, w, labels.at[3].set(-100), ignore_index=-100)
  err.throw()  # ignored labels are not errors
  # eager: raises at once
  with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 50\)"):
    lce(x, w, labels.at[0].set(-1), check_labels=True)
  # the gradient of a checkified loss, and checkify of the gradient
  total = lambda x, lab: jnp.sum(lce(x, w, lab, check_labels=True))
  bad = labels.at[3].set(V)
  grad_of_checked = jax.grad(lambda x: checkify.checkify(total)(x, labels)[1])
  np.testing.assert_allclose(
    grad_of_checked(x), jax.grad(lambda x: jnp.sum(lce(x, w, labels)))(x), rtol=1e-6
  )
  err, _ = jax.jit(checkify.checkify(jax.grad(total), errors=checkify.user_checks))(
    x, bad
  )
  with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 50\)"):
    err.throw()


def test_no_effect_unless_check_labels():
  x, w, b, labels, where = data()
  kw = dict(bias=b, where=where, ignore_index=-100, label_smoothing=0.1)
  f = lambda x, w: jnp.sum(lce(x, w, labels, **kw))
  assert jax.make_jaxpr(f)(x, w).effects == set()
  assert jax.make_jaxpr(jax.grad(f, (0, 1)))(x, w).effects == set()
  g = lambda x, w: jnp.sum(lce(x, w, labels, check_labels=True, **kw))
  assert jax.make_jaxpr(g)(x, w).effects  # the opt-in check is an effect
  with pytest.raises(TypeError, match="check_labels must be a bool"):
    lce(x, w, labels, check_labels=1)
  om = jnp.ones(N)
  for red in ("sum", "mean"):
    f = lambda x, w, red=red: lce(x, w, labels, reduction=red, weights=om, **kw)
    assert jax.make_jaxpr(f)(x, w).effects == set()
    assert jax.make_jaxpr(jax.grad(f, (0, 1)))(x, w).effects == set()
    checked = checkify.checkify(
      lambda x, lab, red=red: lce(x, w, lab, reduction=red, check_labels=True),
      errors=checkify.user_checks,
    )
    err, _ = jax.jit(checked)(x, labels.at[0].set(V))
    with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 50\)"):
      err.throw()
    err, _ = jax.jit(checked)(x, labels)
    err.throw()


@pytest.mark.sweep
@pytest.mark.parametrize("vocab", [5, 300, 40000, 70000])
@pytest.mark.parametrize("x64", [False, True])
def test_labels_of_every_integer_dtype(x64, vocab):
  """Every integer dtype, every class count: no wrap-around, no promotion."""
  dtypes = ["int8", "int16", "int32", "uint8", "uint16", "uint32"]
  dtypes += ["int64", "uint64"] if x64 else []
  dx_of = jax.jit(jax.grad(lambda x, w, t: jnp.sum(lce(x, w, t))))
  ref_dx_of = jax.jit(jax.grad(lambda x, w, t: jnp.sum(composition(x, w, t))))
  with jax.enable_x64(x64):
    x, w, _, _, _ = data(n=6, hidden=3, vocab=vocab)
    for dt in dtypes:
      info = np.iinfo(dt)
      top = min(vocab - 1, info.max)
      want = np.array([0, top // 2, top, 1, top, 0])
      lab = jnp.asarray(want.astype(dt))
      ref = composition(x, w, jnp.asarray(want, jnp.int32))
      got = lce(x, w, lab, check_labels=True)  # eager: no report
      assert_close(got, ref, 1e-5, f"{dt} V={vocab}")
      dx, rx = dx_of(x, w, lab), ref_dx_of(x, w, want.astype(np.int32))
      assert_close(dx, rx, 1e-5, f"dx {dt} V={vocab}")
      if vocab > info.max:
        continue  # every value of the dtype is a class
      bad = jnp.asarray(np.array([0, vocab, 1, 2, 3, 4]).astype(dt))
      assert np.isnan(lce(x, w, bad)[1]) and not np.isnan(lce(x, w, bad)[0])
      with pytest.raises(checkify.JaxRuntimeError, match=rf"\[0, {vocab}\)"):
        lce(x, w, bad, check_labels=True)


@pytest.mark.parametrize("x64", [False, True])
def test_uint8_labels_with_more_classes_than_int8_holds(x64):
  # the example: uint8 labels [3, 250] with 300 classes
  with jax.enable_x64(x64):
    x, w, _, _, _ = data(n=2, hidden=3, vocab=300)
    lab8 = jnp.asarray([3, 250], jnp.uint8)
    ref = composition(x, w, jnp.asarray([3, 250]))
    assert_close(lce(x, w, lab8), ref, 1e-6, "uint8 with V=300")
    if x64:
      ignored = lce(x, w, jnp.asarray([3, 2**64 - 1], jnp.uint64), ignore_index=-100)
      assert np.isnan(ignored[1])  # -100 is no uint64 value: out of range


def test_jax_export_round_trip():
  from jax import export

  x, w, b, labels, where = data()
  kw = dict(bias=b, where=where, ignore_index=-100, label_smoothing=0.1, z_loss=0.01)
  f = lambda x, w, lab: jnp.sum(lce(x, w, lab, **kw))
  vg = jax.value_and_grad(f, (0, 1))
  want = jax.jit(vg)(x, w, labels)
  (n,) = export.symbolic_shape("b")
  shapes = [
    (x, w, labels),
    (
      jax.ShapeDtypeStruct((n, H), x.dtype),
      w,
      jax.ShapeDtypeStruct((n,), labels.dtype),
    ),
  ]
  for args in shapes:
    exp = export.export(jax.jit(vg))(*args)
    got = export.deserialize(exp.serialize()).call(x, w, labels)
    assert_close(got[0], want[0], 1e-6, "value")
    for a, r in zip(got[1], want[1], strict=True):
      assert_close(a, r, 1e-6, "gradient")
  # a symbolic batch of another size works too
  x2, _, _, lab2, _ = data(n=40, seed=3)
  got = export.deserialize(exp.serialize()).call(x2, w, lab2)
  assert_close(got[0], jax.jit(vg)(x2, w, lab2)[0], 1e-6, "value, b=40")
  for red in ("sum", "mean"):
    g = lambda x, w, lab, red=red: lce(x, w, lab, reduction=red, **kw)
    vg = jax.value_and_grad(g, (0, 1))
    want = jax.jit(vg)(x, w, labels)
    for args in shapes:
      exp = export.export(jax.jit(vg))(*args)
      got = export.deserialize(exp.serialize()).call(x, w, labels)
      for a, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(a, r, 1e-5, f"reduction={red}")


def test_small_problems_are_one_chunk_without_a_loop():
  assert _api._chunk(None, 32, 1000) == 1000
  assert _api._chunk(None, 32, 10) == 10
  assert _api._chunk(None, None, 32768) == 1024  # symbolic N
  x, w, _, labels, _ = data(n=32, hidden=16, vocab=1000)
  f = lambda x, w: jnp.sum(lce(x, w, labels))
  text = str(jax.make_jaxpr(jax.value_and_grad(f, (0, 1)))(x, w))
  assert "while" not in text


def test_debug_tools_stay_quiet_on_finite_inputs():
  """debug_nans and checkify's float checks: masked classes, ignored and
  masked-out rows, a fully masked vocabulary and -inf logits form no NaN."""
  x, w, b, labels, where = data()
  masked_class = int(np.flatnonzero(~where)[0])
  lab = labels.at[0].set(-100).at[1].set(masked_class)
  cases = [
    dict(where=where, ignore_index=-100, label_smoothing=0.1, z_loss=0.1),
    dict(where=where, softcap=3.0, bias=b, ignore_index=-100),
    dict(where=jnp.zeros(V, bool), label_smoothing=0.1, z_loss=0.1, ignore_index=-100),
  ]
  for kw in cases:
    f = lambda x, w, kw=kw: jnp.sum(lce(x, w, lab, chunk_size=CHUNK, **kw))
    vg = jax.value_and_grad(f, (0, 1))
    with jax.debug_nans(True):
      out = jax.block_until_ready(vg(x, w))
    assert np.isfinite(out[0])
    err, _ = checkify.checkify(vg, errors=checkify.float_checks)(x, w)
    assert err.get() is None, err.get()


def test_large_logits_stay_exact():
  x, w, _, labels, _ = data()
  big = jnp.full((V,), 1e30, jnp.float32)
  # every logit is 1e30 + O(1): the loss is log V, up to the O(1) part lost
  out = lce(x * 0, w, labels, bias=big)
  np.testing.assert_allclose(out, np.log(V), rtol=1e-6)


# ---------------------------------------------------------------------------
# transformations


def test_jit_vmap_grad():
  x, w, b, labels, where = data(batch=(3, 4))
  kw = dict(bias=b, where=where, label_smoothing=0.1, z_loss=0.01, softcap=3.0)
  f = lambda x, w, labels: lce(x, w, labels, chunk_size=CHUNK, **kw)
  dense = lambda x, w, labels: composition(x, w, labels, **kw)
  ref = jax.jit(jax.vmap(dense))
  ws = jnp.stack([w, 2.0 * w, -w])  # a batch of weights too
  want = ref(x, ws, labels)
  assert_close(jax.jit(jax.vmap(f))(x, ws, labels), want, 1e-5, "jit(vmap)")
  assert_close(jax.vmap(f)(x, ws, labels), want, 1e-5, "vmap")
  mean_loss = lambda ws, f: jnp.mean(jax.vmap(f)(x, ws, labels))
  got = jax.jit(jax.grad(mean_loss), static_argnums=1)(ws, f)
  want = jax.jit(jax.grad(lambda ws: mean_loss(ws, dense)))(ws)
  assert_close(got, want, 1e-5, "grad")


def test_hessian_wrt_x():
  x, w, b, labels, where = data(n=2, hidden=3, vocab=7)
  where = where.at[labels].set(True)
  kw = dict(bias=b, where=where, label_smoothing=0.1, z_loss=0.05, softcap=2.0)
  f = lambda x: jnp.sum(lce(x, w, labels, chunk_size=3, **kw))
  ref = lambda x: jnp.sum(autodiff(x, w, labels, **kw))
  got = jax.jit(jax.hessian(f))(x)
  assert_close(got, jax.jit(jax.hessian(ref))(x), 1e-5, "hessian")


def test_check_grads_second_order():
  with jax.enable_x64(True):
    x, w, b, labels, _ = data(n=3, hidden=4, vocab=9, dtype=np.float64)
    f = lambda x, w, b: lce(
      x, w, labels, bias=b, z_loss=0.1, softcap=2.0, label_smoothing=0.1, chunk_size=4
    )
    check_grads(jax.jit(f), (x, w, b), order=2, modes=("rev",))


# ---------------------------------------------------------------------------
# 16-bit inputs


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_inputs_against_float64(dtype):
  _check_16_bit_against_float64(dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_backward_row_blocks_change_nothing(dtype, monkeypatch):
  """dx accumulated in place over row blocks: 8 rows, then a tail of 4."""
  x, w, b, labels, where = data(dtype=dtype)
  f = lambda x, w, b: lce(x, w, labels, bias=b, where=where, chunk_size=CHUNK)
  out, vjp = jax.vjp(f, x, w, b)
  want = vjp(jnp.ones_like(out))
  parts = 1 if dtype == jnp.float32 else 2  # a 16-bit d is split in two
  monkeypatch.setattr(_tiling, "BLOCK_BYTES", 4 * H * parts * 8)
  jax.clear_caches()
  try:
    if dtype != jnp.float32:
      _check_16_bit_against_float64(dtype)
    out, vjp = jax.vjp(f, x, w, b)
    for g, r in zip(vjp(jnp.ones_like(out)), want, strict=True):
      np.testing.assert_allclose(f64(g), f64(r), rtol=1e-6, atol=1e-6)
  finally:
    jax.clear_caches()


def _check_16_bit_against_float64(dtype):
  x, w, b, labels, where = data(dtype=dtype)
  kw = dict(where=where, label_smoothing=0.1, z_loss=0.01, softcap=3.0)
  f = lambda x, w, b: lce(x, w, labels, bias=b, chunk_size=CHUNK, **kw)
  out, vjp = jax.vjp(f, x, w, b)
  assert out.dtype == dtype
  grads = vjp(jnp.ones_like(out))
  assert [g.dtype for g in grads] == [dtype] * 3
  with jax.enable_x64(True):
    args64 = [jnp.asarray(f64(a)) for a in (x, w, b)]
    ref = lambda x, w, b: autodiff(x, w, labels, bias=b, **kw)
    want, ref_vjp = jax.vjp(ref, *args64)
    want_grads = ref_vjp(jnp.ones_like(want))
  e = float(jnp.finfo(dtype).eps)
  # computed in float32, rounded once: within one eps of the float64 value
  np.testing.assert_allclose(f64(out), f64(want), rtol=e, atol=0)
  for g, r in zip(grads, want_grads, strict=True):
    r = f64(r)
    np.testing.assert_allclose(f64(g), r, rtol=e, atol=1e-5 * np.abs(r).max())


def test_16_bit_w_is_not_widened_whole():
  n, hidden, vocab = 256, 64, 4096
  labels = jnp.zeros((n,), jnp.int32)
  f = lambda x, w: jnp.mean(lce(x, w, labels, chunk_size=256).astype(jnp.float32))
  temp = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    x, w = jnp.zeros((n, hidden), dtype), jnp.zeros((hidden, vocab), dtype)
    temp[dtype] = temp_bytes(f, x, w)
  # at most a 16-bit copy of w beyond float32's, never a float32 one
  assert temp[jnp.bfloat16] < temp[jnp.float32] + hidden * vocab * 3, temp


# ---------------------------------------------------------------------------
# memory: a deterministic figure from the compiler, not a timing


def temp_bytes(f, *args):
  step = jax.jit(jax.value_and_grad(f, tuple(range(len(args)))))
  return step.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_temp_memory_is_a_fraction_of_the_logits():
  n, hidden, vocab = 1024, 64, 8192
  x = jnp.zeros((n, hidden))
  w = jnp.zeros((hidden, vocab))
  labels = jnp.zeros((n,), jnp.int32)
  ours = temp_bytes(lambda x, w: jnp.mean(lce(x, w, labels)), x, w)
  dense = temp_bytes(
    lambda x, w: jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(x @ w, labels)
    ),
    x,
    w,
  )
  logits = n * vocab * 4
  assert dense > logits
  assert ours < logits / 8, (ours, dense)
  # every option on: still no N x V array
  b = jnp.zeros((vocab,))
  full = temp_bytes(
    lambda x, w, b: jnp.mean(
      lce(
        x,
        w,
        labels,
        bias=b,
        where=b > -1,
        ignore_index=-100,
        label_smoothing=0.1,
        z_loss=1e-4,
        softcap=30.0,
      )
    ),
    x,
    w,
    b,
  )
  assert full < logits / 8, full


MIB = 2**20
GEMMA = (8192, 2304, 256000)  # Gemma 2 (2B): tokens per batch, H, V


def gemma_temp(dtype, reduction, grad):
  """XLA's temp bytes (outputs excluded) at Gemma 2 (2B) scale: compile only."""
  n, hidden, vocab = GEMMA
  x = jax.ShapeDtypeStruct((n, hidden), dtype)
  w = jax.ShapeDtypeStruct((hidden, vocab), dtype)
  labels = jax.ShapeDtypeStruct((n,), jnp.int32)

  def loss(x, w, labels):
    out = lce(x, w, labels, reduction=reduction)
    return jnp.sum(out.astype(jnp.float32))

  f = jax.value_and_grad(loss, (0, 1)) if grad else loss
  compiled = jax.jit(f).lower(x, w, labels).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_gemma_scale_memory_has_no_copy_of_w(dtype, reduction):
  hidden, vocab = GEMMA[1:]
  w_bytes = hidden * vocab * jnp.dtype(dtype).itemsize
  loss_only = gemma_temp(dtype, reduction, grad=False)
  assert loss_only <= 64 * MIB, loss_only / MIB
  both = gemma_temp(dtype, reduction, grad=True)
  # room for one float32 N x H dx sum (72 MiB), and no float32 copy of a
  # 16-bit x (it was 221 MiB in bf16); the reduced modes may add one float32
  # H x V accumulator for dw
  extra = 0 if reduction == "none" else hidden * vocab * 4
  assert both <= 160 * MIB + extra, both / MIB
  # no copy of w, not even a 16-bit one (it was 1,346 MiB in bf16); the
  # reduced modes' float32 dw accumulator is the one H x V array allowed
  if reduction == "none" or dtype == jnp.bfloat16:
    assert both < w_bytes / 4, (both / MIB, w_bytes / MIB)


# ---------------------------------------------------------------------------
# the comparison helper catches a wrong gradient


def _without_z_loss_in_bwd():
  """_linear_ce with a deliberately wrong bwd: the z-loss term is dropped."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
  def wrong(x, w, bias, labels, where, cw, opts):
    return _per_example._per_example_fwd(x, w, bias, labels, where, cw, opts)[0]

  def bwd(opts, res, g):
    return _per_example._per_example_bwd(opts._replace(z_loss=0.0), res, g)

  wrong.defvjp(_per_example._per_example_fwd, bwd)
  return wrong


def test_a_wrong_bwd_is_caught():
  x, w, _, labels, _ = data()
  opts = _rows.Options(
    alpha=0.0,
    z_loss=0.05,
    softcap=None,
    ignore_index=None,
    chunk=CHUNK,
    precision=None,
  )
  right = lambda x, w: _per_example.per_example_loss(
    x, w, None, labels, None, None, opts
  )
  wrong = lambda x, w: _without_z_loss_in_bwd()(x, w, None, labels, None, None, opts)
  ref = lambda x, w: composition(x, w, labels, z_loss=0.05)
  assert_matches(right, ref, (x, w), RTOL[np.float32])
  with pytest.raises(AssertionError, match="cotangent"):
    assert_matches(wrong, ref, (x, w), RTOL[np.float32])


# ---------------------------------------------------------------------------
# errors name the rule, what arrived and the fix


@pytest.mark.parametrize(
  "change, error, match",
  [
    ({"x": np.zeros((N, H + 1), np.float32)}, ValueError, r"pass w\.T"),
    ({"w": np.zeros((H,), np.float32)}, ValueError, r"x must be \[\.\.\., H\]"),
    ({"x": np.zeros((N, H), np.int32)}, TypeError, "x must have a floating"),
    ({"labels": np.zeros((N,), np.float32)}, TypeError, "integer dtype"),
    ({"labels": np.zeros((N, 1), np.int32)}, ValueError, r"expected \(12,\)"),
    ({"bias": np.zeros((V + 1,), np.float32)}, ValueError, r"bias must .* \[V\]"),
    ({"where": np.ones((V,), np.int32)}, TypeError, "boolean mask"),
    ({"where": np.ones((N, V), bool)}, ValueError, r"where must have shape \[V\]"),
    ({"z_loss": -1e-4}, ValueError, "z_loss must be finite and >= 0"),
    ({"softcap": 0.0}, ValueError, "softcap must be finite and > 0"),
    ({"label_smoothing": 1.5}, ValueError, r"\[0, 1\]"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be positive"),
    ({"chunk_size": 128.0}, TypeError, "chunk_size must be an int or None"),
    ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int or None"),
    ({"reduction": "avg"}, ValueError, "reduction must be 'none', 'sum' or 'mean'"),
    ({"weights": np.ones((N + 1,), np.float32)}, ValueError, "weights must have"),
    ({"weights": np.ones((N,), np.int32)}, TypeError, "weights must have a float"),
  ],
)
def test_bad_input_errors(change, error, match):
  x, w, _, labels, _ = data()
  kw = {"x": x, "w": w, "labels": labels, **change}
  with pytest.raises(error, match=match):
    lce(kw.pop("x"), kw.pop("w"), kw.pop("labels"), **kw)


def test_traced_z_loss_is_refused():
  x, w, _, labels, _ = data()
  with pytest.raises(TypeError, match="not a traced array"):
    jax.jit(lambda z: lce(x, w, labels, z_loss=z))(0.1)


def test_doctests():
  result = doctest.testmod(_api, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------
# labels and weights: broadcasting as the integer-label CE, weights as a mask


def test_labels_and_weights_broadcast_as_the_integer_label_ce():
  x, w, b, _, where = data(batch=(3, 4))
  labels = jnp.asarray([[1, 7, 0, 49]], jnp.int32)  # (1, 4) against (3, 4)
  omega = jnp.asarray([0.5, 1.0, 2.0, 1.5], jnp.float32)  # (4,)
  kw = dict(bias=b, where=where, label_smoothing=0.1)
  dense = lambda x, w: composition(x, w, jnp.broadcast_to(labels, (3, 4)), **kw)
  # the peer's rule, on the dense logits: (1, 4) labels broadcast to the batch
  z = cap(jnp.matmul(x, w, precision=HIGHEST) + b, None)
  peer = jaxsmx.softmax_cross_entropy_with_integer_labels(
    z, labels, where=jnp.broadcast_to(where, z.shape), label_smoothing=0.1
  )
  np.testing.assert_allclose(lce(x, w, labels, **kw), peer, rtol=1e-5)
  assert_matches(lambda x, w: lce(x, w, labels, **kw), dense, (x, w), 1e-5)
  for red in ("none", "sum", "mean"):
    f = lambda x, w, om, red=red: lce(
      x, w, labels[0], reduction=red, weights=om, chunk_size=CHUNK, **kw
    )
    ref = lambda x, w, om, red=red: reduce_dense(
      dense(x, w), jnp.broadcast_to(labels, (3, 4)), where, None, red, om
    )
    assert_matches(f, ref, (x, w, omega), 1e-5)
  with pytest.raises(ValueError, match=r"labels must have \(or broadcast to\)"):
    lce(x, w, labels[:, :3])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_a_weight_of_0_drops_its_example_before_its_label_is_read(reduction):
  # a loss mask over padding: the padding rows' labels lie outside [0, V)
  x, w, b, labels, _ = data()
  pad = np.arange(N) % 4 == 3
  padded = jnp.where(pad, jnp.asarray([V, -1, 10**6] * 4)[:N], labels)
  omega = jnp.where(pad, 0.0, jnp.linspace(0.5, 1.5, N)).astype(jnp.float32)
  keep = np.flatnonzero(~pad)
  opts = dict(bias=b, label_smoothing=0.1, z_loss=0.01, reduction=reduction)

  def masked(x, w, om):
    return lce(x, w, padded, weights=om, chunk_size=CHUNK, **opts)

  def sliced(x, w, om):  # the padding rows removed
    return lce(x[keep], w, labels[keep], weights=om[keep], chunk_size=CHUNK, **opts)

  value, grads = jax.value_and_grad(lambda *a: jnp.sum(masked(*a)), (0, 1, 2))(
    x, w, omega
  )
  want, want_grads = jax.value_and_grad(lambda *a: jnp.sum(sliced(*a)), (0, 1, 2))(
    x, w, omega
  )
  assert np.isfinite(value)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  dx, dw, d_omega = grads
  np.testing.assert_allclose(dx[keep], want_grads[0][keep], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(dx[pad], 0.0)
  np.testing.assert_allclose(dw, want_grads[1], rtol=1e-5, atol=1e-6)
  # the weights' gradient: as without the padding, and 0 where a weight is 0
  np.testing.assert_allclose(d_omega[keep], want_grads[2][keep], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(d_omega[pad], 0.0)
  if reduction == "none":
    np.testing.assert_array_equal(masked(x, w, omega)[pad], 0.0)
  # a weight of 0 is the mask: the same labels with weight 1 are NaN
  ones = jnp.ones_like(omega)
  assert np.isnan(jnp.sum(lce(x, w, padded, weights=ones, **opts)))
  # and check_labels does not report the rows that do not count
  lce(x, w, padded, weights=omega, check_labels=True, **opts)
  with pytest.raises(checkify.JaxRuntimeError, match="labels must lie in"):
    lce(x, w, padded, weights=ones, check_labels=True, **opts)
