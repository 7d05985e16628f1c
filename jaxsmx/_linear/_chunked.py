"""The chunked kernels: loops over vocabulary chunks of one device's block.

:data:`STATS` forms each row's online-logsumexp statistics; :data:`GRADS`
forms dx, dw and dbias of sum_n g_n L_n from those statistics. The
per-example loss runs the first in its forward pass and the second in its
backward pass; the reduced loss on several devices (or with 16-bit inputs)
runs both in its forward pass.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from jaxsmx._linear import _paths, _rows, _tiling
from jaxsmx._linear._sharding import Kernel, Layout, run, varying


def _stats_local(x, w, labels, bias, where, cw, *, opts, offset):
  """Per-row running max, sum of exp (online logsumexp), target logit and
  sum of the unmasked logits [N] (each times its class weight with class
  weights cw), over the columns of w, which are the classes [offset, offset
  + V) of labels."""
  _, ct = _rows.compute_dtype(x, w, bias)
  n, vocab = x.shape[0], w.shape[1]
  # 16-bit x @ w runs as it is (products exact, sums in float32) unless x is
  # widened (_tiling.WIDEN_BYTES); see _rows.chunk_logits
  keep = x.dtype == w.dtype and not _tiling.widened(x, w)
  xc = x if keep else x.astype(ct)
  lab = labels - offset

  def body(carry, start, size):
    # online logsumexp: running max m and sum s of exp(z - m)
    m, s, z_t, z_sum = carry
    _, z, _, mask = _rows.chunk_logits(xc, w, bias, where, start, size, opts)
    m_new = jnp.maximum(m, jnp.max(z, axis=1))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(z - shift[:, None]), axis=1)
    # the target logit, gathered from the chunk that holds it: O(N), no pass
    local = lab - start
    picked = jnp.take_along_axis(
      z, jnp.clip(local, 0, size - 1)[:, None], axis=1, mode="clip"
    )[:, 0]
    z_t = z_t + jnp.where((local >= 0) & (local < size), picked, 0.0)
    if opts.alpha:
      kept = z if mask is None else jnp.where(mask, z, 0.0)
      if cw is not None:
        kept = kept * _tiling.take(cw, start, size)[None, :]
      z_sum = z_sum + jnp.sum(kept, axis=1)
    return m_new, s, z_t, z_sum

  init = (jnp.full((n,), -jnp.inf, ct), *(jnp.zeros((n,), ct) for _ in range(3)))
  init = varying(init, x, w, labels, bias, where, cw)
  return _tiling.over_chunks(body, init, vocab, opts.chunk)


def _stats_combine(stats, layout: Layout):
  """(shift, log_norm, z_t, z_sum) [N], merged over the devices that split
  the vocabulary: an all-reduce of the max, then of the sums."""
  m, s, z_t, z_sum = stats
  if layout.vocab:
    local = jnp.where(m == -jnp.inf, 0.0, m)
    m = lax.pmax(m, layout.vocab)
    rescale = jnp.exp(local - jnp.where(m == -jnp.inf, 0.0, m))
    s = jnp.where(s == 0, 0.0, s * rescale)
    s, z_t, z_sum = lax.psum((s, z_t, z_sum), layout.vocab)
  return jnp.where(m == -jnp.inf, 0.0, m), jnp.log(s), z_t, z_sum


STATS = Kernel("stats", _stats_local, lambda present: ("n",) * 4, _stats_combine)


def _grads_local(x, w, labels, shift, *coefs, opts, offset):
  """dx, dw, dbias and the class weights' part (chunk_class_weight_part, with
  class weights cw) over the columns of w, which are the classes [offset,
  offset + V) of labels, and over these rows; `coefs` are the per-row
  Coefficients (a, t[, s]) then bias, where and cw. On several devices dx is
  partial (a sum over the vocabulary) and so are dw, dbias and the part
  (over rows)."""
  *coefs, bias, where, cw = coefs
  coef = _rows.Coefficients(coefs[0], coefs[1], coefs[2] if len(coefs) > 2 else None)
  _, ct = _rows.compute_dtype(x, w, bias)
  # 16-bit x and w stay 16-bit unless x is small (docs/internals.md, "16-bit
  # backward"): then float32 products, as for 32-bit inputs
  narrow = x.dtype == w.dtype and jnp.dtype(x.dtype).itemsize == 2
  if narrow:
    widen = _tiling.widened(x, w)
    _paths.take("backward_16bit_widened" if widen else "backward_16bit")
    narrow = not widen
  xc = x if narrow else x.astype(ct)
  mm = functools.partial(
    lax.dot_general, precision=opts.precision, preferred_element_type=ct
  )
  lab = labels - offset

  def body(carry, start, size):
    dx, dw, db, part = carry
    wc, z, t, mask = _rows.chunk_logits(xc, w, bias, where, start, size, opts)
    e = jnp.exp(z - shift[:, None])
    cwc = None if cw is None else _tiling.take(cw, start, size)
    d = _rows.chunk_gradient(e, coef, lab, start, mask, t, cwc)
    parts = _split_16(d, x.dtype) if narrow else (d,)
    dx = _add_rows(dx, parts, wc.astype(parts[0].dtype), mm)
    dw = _tiling.put(dw, _x_t_d(xc, parts, start, mm).astype(dw.dtype), start)
    if db is not None:
      db = _tiling.put(db, jnp.sum(d, axis=0).astype(db.dtype), start)
    if part is not None:
      chunk = _rows.chunk_class_weight_part(coef, shift, z, mask)
      part = _tiling.put(part, chunk.astype(part.dtype), start)
    return dx, dw, db, part

  init = (
    jnp.zeros(xc.shape, ct),
    jnp.zeros(w.shape, w.dtype),
    None if bias is None else jnp.zeros(bias.shape, bias.dtype),
    None if cw is None else jnp.zeros(cw.shape, ct),
  )
  init = varying(init, x, w, labels, shift, *coefs, bias, where, cw)
  dx, dw, db, part = _tiling.over_chunks(body, init, w.shape[1], opts.chunk, narrow)
  return dx.astype(x.dtype), dw, db, part


def _grads_combine(grads, layout: Layout):
  """dx summed over the vocabulary's axes; dw, dbias and the class weights'
  part over the rows'."""
  dx, dw, db, part = grads
  if layout.vocab:
    dx = lax.psum(dx, layout.vocab)
  if layout.rows:
    dw, db, part = lax.psum((dw, db, part), layout.rows)
  return tuple(a for a in (dx, dw, db, part) if a is not None)


GRADS = Kernel(
  "grads",
  _grads_local,
  lambda present: (
    ("n h", "h v") + (("v",) if present[0] else ()) + (("v",) if present[2] else ())
  ),
  _grads_combine,
)


def _split_16(d, dtype):
  """d (float32) as (hi, lo) in the 16-bit `dtype`, hi + lo ~ d: products of
  each part with 16-bit x and w are exact in float32."""
  hi = d.astype(dtype)
  return hi, (d - hi.astype(d.dtype)).astype(dtype)


def _add_rows(acc, parts, wc, mm):
  """acc + sum_p p @ wc^T for the [N, H] float32 accumulator acc: in place, in
  a loop over row blocks whose products take at most 16 MiB, so that no second
  N x H array (the product before it is added) exists."""
  n, hidden = acc.shape
  rows = _tiling.BLOCK_BYTES // (4 * max(hidden, 1) * len(parts)) // 8 * 8
  product = lambda ps: sum(mm(p, wc, (((1,), (1,)), ((), ()))) for p in ps)
  if not isinstance(n, int) or rows >= n or rows < 8:
    return acc + product(parts)

  def add(acc, start, size):
    block = lax.dynamic_slice_in_dim(acc, start, size, 0)
    blocks = [_tiling.take_rows(p, start, size) for p in parts]
    return lax.dynamic_update_slice_in_dim(acc, block + product(blocks), start, 0)

  return _tiling.over_row_blocks(add, acc, n, rows, "dx_rows")


def _x_t_d(xc, parts, start, mm):
  """sum_p x^T p, [H, size], for the chunk at `start`. With 16-bit x at a
  traced start, as (p^T x)^T, the transposes inside conditionals: XLA would
  fold a visible transpose into the product, which then contracts x's major
  axis and is widened."""
  if len(parts) == 1 or isinstance(start, int):
    return sum(mm(xc, p, (((0,), (0,)), ((), ()))) for p in parts)
  transposed = lambda p: _tiling.in_loop(lambda a: a.T, start, p)
  product = sum(mm(transposed(p), xc, (((1,), (0,)), ((), ()))) for p in parts)
  return _tiling.in_loop(lambda a: a.T, start, product)


def smoothing_weights(cwt, opts):
  """The class weights the kernels need, [V], or None: only label smoothing
  reads a class's weight per column (the label's weight is per row)."""
  return None if cwt is None or not opts.alpha else cwt.w


def stats(x, w, labels, bias, where, opts, cwt=None):
  """(shift, log_norm, z_t, z_sum) [N] of every row, over all of V."""
  cw = smoothing_weights(cwt, opts)
  return run(STATS, opts, (x, w, labels), (bias, where, cw))


def gradients(x, w, bias, labels, where, shift, log_norm, g, opts, cwt=None):
  """(dx, dw, dbias, part) of sum_n g_n L_n, in the primals' dtypes, for rows
  with normaliser (shift, log_norm); part is the class weights' part summed
  over the rows (None unless class weights meet smoothing)."""
  _, ct = _rows.compute_dtype(x, w, bias)
  coef = _rows.coefficients(
    g.astype(ct), shift, log_norm, labels, where, w.shape[1], opts, cwt
  )
  per_row = tuple(c for c in coef if c is not None)
  cw = smoothing_weights(cwt, opts)
  out = list(run(GRADS, opts, (x, w, labels, shift, *per_row), (bias, where, cw)))
  dx, dw = out[:2]
  db = out.pop(2) if bias is not None else None
  part = out[2] if cw is not None else None
  return dx, dw, db, part
