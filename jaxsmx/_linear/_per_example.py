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


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def per_example_loss(x, w, bias, labels, where, opts):
  """Losses [N] of the encoded labels (see _rows.encode)."""
  return _per_example_fwd(x, w, bias, labels, where, opts)[0]


def _per_example_fwd(x, w, bias, labels, where, opts):
  _paths.take("per_example")
  out_dtype, _ = _rows.compute_dtype(x, w, bias)
  stats = _chunked.stats(x, w, labels, bias, where, opts)
  loss = _rows.row_losses(stats, labels, where, w.shape[1], opts)
  # saves x, w, bias, labels, where and shift, log_norm [N]; recomputes z.
  # An empty row (every class masked) is saved as a dropped one with a
  # finite log_norm: no -inf residual, which jax.debug_infs checks eagerly
  shift, log_norm = stats[:2]
  _, invalid, _ = _rows.row_flags(labels, where, w.shape[1])
  empty = is_empty(log_norm) & ~invalid
  labels = jnp.where(empty, _rows.IGNORED, labels)
  log_norm = jnp.where(empty, 0.0, log_norm)
  return loss.astype(out_dtype), (x, w, bias, labels, where, shift, log_norm)


def _per_example_bwd(opts, res, g):
  # d/du per chunk: _rows.chunk_gradient with the cotangent as row factor
  x, w, bias, labels, where, shift, log_norm = res
  dx, dw, db = _chunked.gradients(x, w, bias, labels, where, shift, log_norm, g, opts)
  return like(dx, x), like(dw, w), like(db, bias), None, None


per_example_loss.defvjp(_per_example_fwd, _per_example_bwd)
