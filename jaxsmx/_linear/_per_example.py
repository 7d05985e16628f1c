"""The per-example loss: one value per example, its gradient in the backward
pass.

The forward rule streams over the vocabulary for each row's normaliser and
keeps only those (two floats per row) beside the inputs; the backward rule
streams again, recomputing each chunk's logits, and forms dx, dw and dbias
from the chunk gradient of :mod:`jaxsmx._linear._rows`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsmx._linear import _chunked, _paths, _rows
from jaxsmx._linear._sharding import like
from jaxsmx._numerics import is_empty


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def per_example_loss(x, w, bias, labels, where, cw, opts):
  """Losses [N] of the encoded labels (see _rows.encode), with class
  weights cw [V] or None."""
  return _per_example_fwd(x, w, bias, labels, where, cw, opts)[0]


def _per_example_fwd(x, w, bias, labels, where, cw, opts):
  _paths.take("per_example")
  out_dtype, ct = _rows.compute_dtype(x, w, bias)
  cwt = _rows.class_weights_of(cw, labels, where, w.shape[1], ct)
  stats = _chunked.stats(x, w, labels, bias, where, opts, cwt)
  loss = _rows.row_losses(stats, labels, where, w.shape[1], opts, cwt)
  # saves x, w, bias, labels, where, cw and shift, log_norm [N] (and z_t with
  # class weights, for their gradient); recomputes z. An empty row (every
  # class masked) is saved as a dropped one with a finite log_norm: no -inf
  # residual, which jax.debug_infs checks eagerly
  shift, log_norm = stats[:2]
  _, invalid, _ = _rows.row_flags(labels, where, w.shape[1])
  empty = is_empty(log_norm) & ~invalid
  labels = jnp.where(empty, _rows.IGNORED, labels)
  log_norm = jnp.where(empty, 0.0, log_norm)
  z_t = None if cw is None else jnp.where(empty, shift, stats[2])
  res = (x, w, bias, labels, where, cw, shift, log_norm, z_t)
  return loss.astype(out_dtype), res


def _per_example_bwd(opts, res, g):
  # d/du per chunk: _rows.chunk_gradient with the cotangent as row factor
  x, w, bias, labels, where, cw, shift, log_norm, z_t = res
  _, ct = _rows.compute_dtype(x, w, bias)
  cwt = _rows.class_weights_of(cw, labels, where, w.shape[1], ct)
  dx, dw, db, part = _chunked.gradients(
    x, w, bias, labels, where, shift, log_norm, g, opts, cwt
  )
  dcw = None
  if cw is not None:
    stats = (shift, log_norm, z_t)
    dcw = _rows.class_weight_gradient(
      g.astype(ct), stats, labels, where, w.shape[1], opts, part
    )
    dcw = like(dcw.astype(cw.dtype), cw)
  return like(dx, x), like(dw, w), like(db, bias), None, None, dcw


per_example_loss.defvjp(_per_example_fwd, _per_example_bwd)
