r"""The reduced losses, ``reduction="sum"`` and ``"mean"``.

The loss :math:`\sum_n r_n L_n` is one number, so the forward rule forms dx,
dw and dbias (the per-example gradients summed with the row weights
:math:`r_n`) and the backward rule only scales them by the scalar cotangent.
Two kernels form them: one pass over blocks of rows against all of ``w``
(three matmuls, as dense autodiff), where it applies and pays, and otherwise
the chunked kernels of :mod:`jaxsmx._linear._chunked` (statistics, then
gradient), which keep ``w`` where it is on every device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxsmx._linear import _chunked, _paths, _rows, _tiling
from jaxsmx._linear._sharding import is_distributed, like


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def reduced_loss(x, w, bias, labels, where, weights, cw, opts):
  """sum_n r_n L_n of the encoded labels, r_n from opts.reduction, with
  class weights cw [V] or None."""
  out_dtype, ct = _rows.compute_dtype(x, w, bias)
  vocab = w.shape[1]
  cwt = _rows.class_weights_of(cw, labels, where, vocab, ct)
  stats = _chunked.stats(x, w, labels, bias, where, opts, cwt)
  losses = _rows.row_losses(stats, labels, where, vocab, opts, cwt)
  r, _, _ = _rows.row_weights(labels, where, weights, vocab, opts, ct, cwt)
  return jnp.sum(r * losses).astype(out_dtype)


def _reduced_fwd(x, w, bias, labels, where, weights, cw, opts):
  out_dtype, ct = _rows.compute_dtype(x, w, bias)
  vocab = w.shape[1]
  cwt = _rows.class_weights_of(cw, labels, where, vocab, ct)
  r, counted, denom = _rows.row_weights(labels, where, weights, vocab, opts, ct, cwt)
  if _one_pass_applies(x, w, bias, weights, cw):
    stats, (dx, dw, db, part) = _one_pass(x, w, bias, labels, where, r, opts, cwt)
  else:
    _paths.take("reduced_chunked")
    stats = _chunked.stats(x, w, labels, bias, where, opts, cwt)
    shift, log_norm = stats[0], stats[1]
    dx, dw, db, part = _chunked.gradients(
      x, w, bias, labels, where, shift, log_norm, r, opts, cwt
    )
  losses = _rows.row_losses(stats, labels, where, vocab, opts, cwt)
  value = jnp.sum(r * losses)
  d_omega = None
  if weights is not None:
    # d/d omega_n: L_n (sum), or (L_n - [n counts] w_t * mean) / D (mean)
    d_omega = losses if denom is None else (losses - counted * value) / denom
    d_omega = d_omega.astype(weights.dtype)
  d_cw = None
  if cw is not None:
    d_cw = _rows.class_weight_gradient(r, stats, labels, where, vocab, opts, part)
    if denom is not None:  # mean: D = sum_n omega_n w_t counts w_k's rows too
      d_cw = d_cw - _denominator_part(r, labels, where, vocab, value)
    d_cw = d_cw.astype(cw.dtype)
  res = (dx, dw, db, d_omega, d_cw, x, w, bias, weights, cw)
  return value.astype(out_dtype), res


def _denominator_part(r, labels, where, vocab, value):
  """d/dw_k of 1 / D times the summed weighted loss, for D = sum_n omega_n
  w_{t_n}: (mean / D) sum_{n counted, t_n = k} omega_n, with r_n =
  omega_n / D."""
  dropped, invalid, _ = _rows.row_flags(labels, where, vocab)
  return value * _rows.by_class(r, labels, dropped | invalid, vocab)


def _reduced_bwd(opts, res, g):
  del opts
  dx, dw, db, d_omega, d_cw, x, w, bias, weights, cw = res
  scale = lambda d, p: None if d is None else like((g * d).astype(d.dtype), p)
  return (
    scale(dx, x),
    scale(dw, w),
    scale(db, bias),
    None,
    None,
    scale(d_omega, weights),
    scale(d_cw, cw),
  )


reduced_loss.defvjp(_reduced_fwd, _reduced_bwd)


def _one_pass_applies(x, w, bias, weights, cw=None) -> bool:
  """True where the one-pass kernel applies and pays: 32- or 64-bit x and w,
  or 16-bit ones with a small x (_tiling.widened: float32 products, w widened
  whole, which the row-block bound below keeps to V <= 32768), a static
  N, row blocks of at least 128 rows (or all rows: shorter blocks make the
  dw traffic dominate), and one device (per-device chunks keep w in place)."""
  small_16 = _tiling.widened(x, w)
  if any(jnp.dtype(a.dtype).itemsize < 4 for a in (x, w)) and not small_16:
    return False
  if not isinstance(x.shape[0], int) or not isinstance(w.shape[1], int):
    return False  # a symbolic batch or vocabulary (jax.export): no static blocks
  n = x.shape[0]
  if n == 0 or w.shape[1] == 0:
    return False  # nothing to block: the chunked kernel runs no step
  if _tiling.row_block(n, w.shape[1]) < min(n, _tiling.ROW_BLOCK_MIN):
    return False
  return not is_distributed(x, w, bias, weights, cw)


def _one_pass(x, w, bias, labels, where, r, opts, cwt=None):
  """((shift, log_norm, z_t, z_sum) [N], (dx, dw, dbias, part)) of sum_n r_n
  L_n, in one pass over blocks of rows, each against all of w: the logits, dx
  and dw are three matmuls, and dw accumulates in the compute dtype; part is
  the class weights' part (see _chunked.gradients)."""
  _paths.take("reduced_one_pass")
  _, ct = _rows.compute_dtype(x, w, bias)
  n, vocab = x.shape[0], w.shape[1]
  xc, wc = x.astype(ct), w.astype(ct)
  bc = None if bias is None else bias.astype(ct)
  cw = _chunked.smoothing_weights(cwt, opts)
  mm = functools.partial(
    lax.dot_general, precision=opts.precision, preferred_element_type=ct
  )

  def body(carry, start, size):
    stats, dx, dw, db, part = carry
    xb, lb, rb = (lax.dynamic_slice_in_dim(a, start, size, 0) for a in (xc, labels, r))
    u = mm(xb, wc, (((1,), (0,)), ((), ())))
    z, t, mask = _rows.cap_and_mask(u, bc, where, None, opts)
    block_stats, e = _block_stats(z, lb, mask, opts, cw)
    rows = None
    if cwt is not None:  # the block's rows of the labels' weights
      rows = cwt._replace(target=lax.dynamic_slice_in_dim(cwt.target, start, size))
    coef = _rows.coefficients(rb, *block_stats[:2], lb, where, vocab, opts, rows)
    d = _rows.chunk_gradient(e, coef, lb, 0, mask, t, cw)
    dx = lax.dynamic_update_slice_in_dim(
      dx, mm(d, wc, (((1,), (1,)), ((), ()))), start, 0
    )
    dw = dw + mm(xb, d, (((0,), (0,)), ((), ())))
    if db is not None:
      db = db + jnp.sum(d, axis=0)
    if part is not None:
      part = part + _rows.chunk_class_weight_part(coef, block_stats[0], z, mask)
    stats = tuple(
      lax.dynamic_update_slice_in_dim(a, b, start, 0)
      for a, b in zip(stats, block_stats, strict=True)
    )
    return stats, dx, dw, db, part

  zeros = lambda shape: jnp.zeros(shape, ct)
  init = (
    tuple(zeros((n,)) for _ in range(4)),
    zeros(xc.shape),
    zeros(wc.shape),
    None if bc is None else zeros(bc.shape),
    None if cw is None else zeros(cw.shape),
  )
  block = _tiling.row_block(n, vocab)
  stats, dx, dw, db, part = _tiling.over_row_blocks(body, init, n, block, "row_block")
  db = None if db is None or bias is None else db.astype(bias.dtype)
  return stats, (dx.astype(x.dtype), dw.astype(w.dtype), db, part)


def _block_stats(z, labels, mask, opts, cw=None):
  """((shift, log_norm, z_t, z_sum) [R], e = exp(z - shift)) of a block of
  rows against all of V."""
  m = jnp.max(z, axis=1)
  shift = jnp.where(m == -jnp.inf, 0.0, m)
  e = jnp.exp(z - shift[:, None])
  log_norm = jnp.log(jnp.sum(e, axis=1))
  vocab = z.shape[1]
  picked = jnp.take_along_axis(
    z, jnp.clip(labels, 0, vocab - 1)[:, None], axis=1, mode="clip"
  )[:, 0]
  z_t = jnp.where(labels >= 0, picked, 0.0)
  z_sum = jnp.zeros_like(z_t)
  if opts.alpha:
    kept = z if mask is None else jnp.where(mask, z, 0.0)
    z_sum = jnp.sum(kept if cw is None else kept * cw[None, :], axis=1)
  return (shift, log_norm, z_t, z_sum), e
