r"""The row math of the fused loss, shared by every kernel.

Labels and their flags, the logits of a chunk, the per-example losses from
the online-logsumexp statistics, the rows' weights of a reduced loss, and the
one formula for the gradient of a chunk of logits:

.. math::
  \frac{\partial L}{\partial u} = \Big(a\,(W + 2\lambda\ell)
    - (1-\alpha)\,w_t\,\mathrm{onehot}(t) - \frac{\alpha}{C}\,w \odot m\Big)
    \odot (1 - \tanh^2(u/c)),

with class weights :math:`w` (1 without them), the label's weight
:math:`w_t` and :math:`W = (1-\alpha) w_t + \frac{\alpha}{C}\sum_k m_k w_k`,
scaled per row by the cotangent (per-example mode) or by the row's weight
(reduced modes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxsmx import _checks
from jaxsmx._linear import _tiling
from jaxsmx._linear._sharding import explicit_spec
from jaxsmx._numerics import explicit_sharding, is_empty

FN = "linear_softmax_cross_entropy"

IGNORED, INVALID = -1, -2


class Options(NamedTuple):
  """The static configuration (hashable, passed as one nondiff argument)."""

  alpha: float
  z_loss: float
  softcap: float | None
  ignore_index: int | None
  chunk: int
  precision: lax.PrecisionLike
  reduction: str = "none"


def encode(labels, vocab, ignore_index, weights=None):
  """Labels of any integer dtype as int32: the class where in [0, V),
  IGNORED for ignore_index and for a weight of 0 (the example does not count:
  its label is not read), INVALID otherwise. Compared in their own dtype
  (_checks.label_index), so none wraps or promotes."""
  index, in_range, ignored = _checks.label_index(labels, vocab, ignore_index)
  if weights is not None:
    ignored = ignored | (weights == 0)
  return jnp.where(ignored, IGNORED, jnp.where(in_range, index, INVALID))


def row_flags(labels, where, vocab):
  """Returns (dropped, invalid, masked_out), each [N] bool, for encoded labels.

  dropped: ignore_index, a target class masked out by `where`, or any label
    when `where` masks every class; such rows give 0.
  invalid: outside [0, V) and not ignore_index, with some class unmasked;
    such rows become NaN. With every class masked the slice is empty
    (masking means slicing), so no label is read.
  masked_out: an in-range target whose class `where` masks out while other
    classes are left (reported under checkify).
  """
  in_range = labels >= 0
  ignored = labels == IGNORED
  invalid = labels == INVALID
  if where is None:
    return ignored, invalid, jnp.zeros_like(in_range)
  if where.shape[0] == 0:  # an empty vocabulary: no label is read
    return jnp.ones_like(in_range), jnp.zeros_like(in_range), jnp.zeros_like(in_range)
  present = jnp.any(where)
  kept = _at(where, jnp.clip(labels, 0, vocab - 1))
  masked_out = present & in_range & ~ignored & ~kept
  return ignored | ~present | masked_out, invalid & present, masked_out


def _at(where, index):
  """where[index] for the [V] mask and [N] labels. Under explicit sharding the
  result is sharded like the labels (the V flags are gathered)."""
  if explicit_spec(index) is None:
    return where[index]
  return where.at[index].get(out_sharding=jax.typeof(index).sharding)


def report_bad_labels(labels, where, weights, vocab, ignore_index) -> None:
  """Out-of-range and masked-out labels of the examples that count
  (check_labels=True); O(N)."""
  code = encode(labels, vocab, ignore_index, weights)
  _, invalid, masked_out = row_flags(code, where, vocab)
  masked_out = None if where is None else masked_out
  _checks.report_labels(FN, labels, vocab, ignore_index, invalid, masked_out)


class ClassWeights(NamedTuple):
  """The class weights and what the rows need of them: w [V] in the compute
  dtype, target [N] the weight of each row's label (any value in rows that
  give 0 or NaN), share the mean weight of the unmasked classes,
  sum_k m_k w_k / C (a scalar)."""

  w: jax.Array
  target: jax.Array
  share: jax.Array


def class_weights_of(cw, labels, where, vocab, ct) -> ClassWeights | None:
  """The rows' view of the [V] class weights (None without them)."""
  if cw is None:
    return None
  w = cw.astype(ct)
  if w.shape[0] == 0:  # an empty vocabulary: every row is dropped
    target = jnp.zeros(labels.shape, ct)
  else:
    target = _at(w, jnp.clip(labels, 0, vocab - 1))
  kept = w if where is None else jnp.where(where, w, 0.0)
  share = jnp.sum(kept) / num_classes(where, vocab, ct)
  return ClassWeights(w, target, share)


def _weighted(w, x):
  """w * x, 0 where w = 0: a class of weight 0 adds 0, even at x = inf."""
  return jnp.where(w == 0, 0.0, w * x)


def compute_dtype(x, w, bias):
  """(the result's dtype, the dtype computed in)."""
  dtype = jnp.result_type(x, w) if bias is None else jnp.result_type(x, w, bias)
  return dtype, _checks.compute_dtype(dtype)


def num_classes(where, vocab, dtype):
  """C, the number of unmasked classes (at least 1), in `dtype`; a concrete V
  without a mask as a Python int (weakly typed)."""
  if where is None:
    return vocab if isinstance(vocab, int) else jnp.asarray(vocab, dtype)
  return jnp.maximum(jnp.sum(where, dtype=dtype), 1)


def _poisoned(values, invalid):
  """values [N], NaN in the rows with an invalid label. The NaN is log(-1),
  formed only in those rows: no NaN constant, so jax.debug_nans (op by op
  too) and checkify stay quiet on valid labels."""
  return values + jnp.log(jnp.where(invalid, -1.0, 1.0).astype(values.dtype))


def chunk_logits(x, w, bias, where, start, size, opts):
  """One chunk's capped, masked logits [N, size]: (w's chunk, z, tanh(u/c) or
  None, the chunk's mask or None). `start` may be traced or static."""
  # a 16-bit x @ w runs as it is, products exact and sums in float32; an x
  # unlike w was cast to the compute dtype (a widened 16-bit x among them:
  # no promotion here, which strict promotion would refuse)
  ct = _checks.compute_dtype(x.dtype if x.dtype != w.dtype else w.dtype)
  wc = _tiling.take(w, start, size).astype(x.dtype)
  dims = (((1,), (0,)), ((), ()))
  z = lax.dot_general(x, wc, dims, precision=opts.precision, preferred_element_type=ct)
  bc = None if bias is None else _tiling.take(bias, start, size)
  return (wc, *cap_and_mask(z, bc, where, start, opts))


def cap_and_mask(z, bias, where, start, opts):
  """(z + bias, capped and masked; tanh(u/c) or None; the chunk's mask)."""
  if bias is not None:
    z = z + bias.astype(z.dtype)[None]
  t = None
  if opts.softcap is not None:
    t = jnp.tanh(z / opts.softcap)
    z = opts.softcap * t
  m = None
  if where is not None:
    m = where if start is None else _tiling.take(where, start, z.shape[1])
    z = jnp.where(m, z, -jnp.inf)
  return z, t, m


def row_losses(stats, labels, where, vocab, opts, cwt=None):
  """Per-example losses [N] in the compute dtype from (shift, log_norm, z_t,
  z_sum): 0 for dropped and empty rows, NaN for invalid labels. No NaN or
  inf - inf is formed on the way (a masked target logit is -inf). With
  class weights (cwt), z_sum is the weighted sum sum_k m_k w_k z_k."""
  shift, log_norm, z_t, z_sum = stats
  dropped, invalid, _ = row_flags(labels, where, vocab)
  off = dropped | is_empty(log_norm)
  log_norm = jnp.where(off, 0.0, log_norm)
  z_t = jnp.where(off, shift, z_t)
  lse = shift + log_norm
  # (shift - z_t) + log_norm, not lse - z_t: exact for logits near 1e30
  loss = (shift - z_t) + log_norm
  if cwt is not None:
    loss = _weighted(cwt.target, loss)
  if opts.alpha:
    mean_z = jnp.where(off, shift, z_sum / num_classes(where, vocab, z_sum.dtype))
    if cwt is None:
      smooth = (shift - mean_z) + log_norm
    else:  # sum_k m_k w_k (lse - z_k) / C
      smooth = (cwt.share * shift - mean_z) + cwt.share * log_norm
    loss = (1.0 - opts.alpha) * loss + opts.alpha * smooth
  if opts.z_loss:
    loss = loss + opts.z_loss * lse * lse
  return _poisoned(jnp.where(off, 0.0, loss), invalid)


def row_weights(labels, where, weights, vocab, opts, ct, cwt=None):
  """(r, counted, denominator): loss = sum_n r_n L_n, counted 1 or 0 per row
  in `ct` (times the label's class weight with class weights, cwt). For
  'mean', r_n = omega_n / D with D the total weight of the counted rows, each
  times its label's class weight as in torch (1 when D = 0, so that a batch
  of which nothing counts gives 0)."""
  dropped, _, _ = row_flags(labels, where, vocab)
  omega = jnp.ones(labels.shape, ct) if weights is None else weights.astype(ct)
  counted = (~dropped).astype(ct)
  if cwt is not None:
    counted = jnp.where(dropped, 0.0, cwt.target)
  if opts.reduction == "sum":
    return omega, counted, None
  total = jnp.sum(jnp.where(dropped, 0.0, omega * counted))
  denom = jnp.where(total == 0, 1.0, total)
  return omega / denom, counted, denom


# ---------------------------------------------------------------------------
# The gradient of a chunk of logits: one formula for every kernel.


class Coefficients(NamedTuple):
  """Per-row factors [N] of the chunk gradient d = e * a - onehot * t - m * w
  * s, with e = exp(z - shift): a = g (W + 2 lambda lse) / sum(e), t = g (1 -
  alpha) w_t, s = g alpha / C (None without smoothing), W = (1 - alpha) w_t +
  alpha sum_k m_k w_k / C (w = 1 without class weights: W = 1). 0 in dropped
  and empty rows, NaN in rows with an invalid label."""

  a: jax.Array
  t: jax.Array
  s: jax.Array | None


def coefficients(
  g, shift, log_norm, labels, where, vocab, opts, cwt=None
) -> Coefficients:
  """The per-row factors of sum_n g_n L_n's gradient, for rows with
  normaliser (shift, log_norm) and encoded labels; g, shift, log_norm [N];
  cwt the class weights (ClassWeights) or None."""
  dropped, invalid, _ = row_flags(labels, where, vocab)
  empty = is_empty(log_norm)
  live_norm = jnp.where(empty, 0.0, log_norm)

  def per_row(coef):
    return _poisoned(jnp.where(dropped | empty, 0.0, coef), invalid)

  # the target's mass W (1 without class weights) and the label's weight
  mass, g_t = 1.0, g
  if cwt is not None:
    mass = (1.0 - opts.alpha) * cwt.target + opts.alpha * cwt.share
    g_t = g * cwt.target
  g_a = g * mass
  if opts.z_loss:
    g_a = g * (mass + 2.0 * opts.z_loss * (shift + live_norm))
  spread = None
  if opts.alpha:
    spread = per_row(g * (opts.alpha / num_classes(where, vocab, g.dtype)))
  return Coefficients(
    per_row(g_a * jnp.exp(-live_norm)), per_row(g_t * (1.0 - opts.alpha)), spread
  )


def chunk_gradient(e, coef: Coefficients, labels, start, mask, t, cw=None):
  """dL/du [N, size] of the chunk at `start` (classes start..start+size of
  the [N] labels), from e = exp(z - shift) [N, size], the chunk's mask,
  tanh(u/c) (None when off) and the chunk's class weights (None without)."""
  # d/dz: a (W + 2 z_loss lse) - (1 - alpha) w_t onehot - alpha / C * w * mask
  cols = start + lax.broadcasted_iota(labels.dtype, (1, e.shape[1]), 1)
  d = e * coef.a[:, None] - jnp.where(cols == labels[:, None], coef.t[:, None], 0.0)
  if coef.s is not None:
    s = coef.s[:, None] if cw is None else coef.s[:, None] * cw[None, :]
    d = d - (s if mask is None else jnp.where(mask, s, 0.0))
  if t is not None:
    d = d * (1.0 - t * t)  # d/du = d/dz * (1 - tanh^2(u / c))
  return d


def chunk_class_weight_part(coef: Coefficients, shift, z, mask):
  """sum_n s_n (shift_n - z_nk) [size] over the rows, for the chunk's
  unmasked classes (0 for masked ones): the smoothing part of the class
  weights' gradient, less its per-row log_norm (class_weight_gradient)."""
  assert coef.s is not None
  gap = shift[:, None] - z
  gap = gap if mask is None else jnp.where(mask, gap, 0.0)
  return jnp.sum(coef.s[:, None] * gap, axis=0)


def by_class(values, labels, skip, vocab):
  """sum_n values_n at each row's label, over the rows not skipped: [V].
  Under explicit sharding the sum is replicated (an all-reduce of V values)."""
  index = jnp.where(skip, 0, labels)
  out = jnp.zeros((vocab,), values.dtype)
  values = jnp.where(skip, 0.0, values)
  if explicit_sharding(index) is None:
    return out.at[index].add(values, mode="drop")
  return out.at[index].add(values, mode="drop", out_sharding=P())


def class_weight_gradient(g, stats, labels, where, vocab, opts, part):
  """d/dw [V] of sum_n g_n L_n, for rows with statistics (shift, log_norm,
  z_t, ...) and the kernels' chunk_class_weight_part summed over the
  vocabulary (None without smoothing):

  d/dw_k = (1 - alpha) sum_{n : t_n = k} g_n (lse_n - z_t,n)
           + alpha / C m_k sum_n g_n (lse_n - z_nk),

  0 from dropped and empty rows, NaN everywhere if a label is invalid."""
  shift, log_norm, z_t = stats[0], stats[1], stats[2]
  dropped, invalid, _ = row_flags(labels, where, vocab)
  off = dropped | is_empty(log_norm)
  live_norm = jnp.where(off, 0.0, log_norm)
  # a dropped row's target logit may be -inf (masked): shift there, no inf
  nll = (shift - jnp.where(off, shift, z_t)) + live_norm
  dw = by_class((1.0 - opts.alpha) * g * nll, labels, off | invalid, vocab)
  if part is not None:
    s = jnp.where(off, 0.0, g) * (opts.alpha / num_classes(where, vocab, g.dtype))
    norm = jnp.sum(s * live_norm)
    dw = dw + (part + (norm if where is None else jnp.where(where, norm, 0.0)))
  return _poisoned(dw, jnp.any(invalid))
