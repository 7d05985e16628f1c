r"""softmax_cross_entropy: the cross-entropy of soft labels (a distribution
over the classes) against the softmax of logits, one value per example."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  exp_normalizer,
  flat_class_axes,
  log_norm_of,
  log_probs,
  masked,
  num_classes,
  ratio,
  same_varying_axes,
  times_cotangent,
  upcast,
)


@array_inputs
def softmax_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  label_smoothing: float = 0.0,
) -> jax.Array:
  r"""Cross-entropy between soft labels and the softmax of logits.

  .. math::
    L(z, y) = -\sum_i y_i \log \mathrm{softmax}(z)_i
      = \Big(\sum_i y_i\Big) \log\sum_k e^{z_k} - \sum_i y_i z_i

  A drop-in replacement for :func:`optax.losses.softmax_cross_entropy`.

  Args:
    logits: ``[..., num_classes]``, floating.
    labels: ``[..., num_classes]`` label distribution (soft, or one-hot
      of a floating, integer or boolean dtype), broadcasting against
      ``logits`` as in optax (``[num_classes]`` for one distribution shared
      by every example). Integer and boolean labels are converted to the
      logits' dtype.
    axis: the class axis or axes.
    where: boolean mask broadcasting to ``logits.shape``; as in optax, a
      mask of lower rank than the logits is one flag per example (it
      broadcasts to the shape without the class axes). Masking means slicing:
      ``f(z, y, where=m) == f(z[m], y[m])``; label mass on a masked class is
      dropped, so the loss is never negative.
    label_smoothing: keyword-only :math:`\alpha \in [0, 1]`; the labels become
      :math:`(1-\alpha) y + \alpha / C`, with :math:`C` the number of unmasked
      classes.

  Returns:
    ``[...]``: per-example losses, in the promoted dtype of the inputs
    (integer and boolean labels count as the logits' dtype), as in optax.

  Edge cases: a :math:`-\infty` logit is a class of probability 0: it costs
  nothing and gets gradient 0 unless the label puts mass there, which costs
  :math:`+\infty`. An all :math:`-\infty` or fully masked slice gives 0 with
  gradient 0. A :math:`+\infty` or NaN logit makes the example NaN.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.round(np.asarray(jaxsmx.softmax_cross_entropy(logits, labels)), 4))
    [0.2761 2.9518]

  Notes:
    Gradient: :math:`\partial L/\partial z_i = a_i \sum_j y_j - y_i` (the
    article's result, before one-hot) and :math:`\partial L/\partial y_i =
    -\log a_i`, with :math:`a = \mathrm{softmax}(z)`; with label smoothing,
    :math:`y` is the smoothed label in the first and the second is scaled by
    :math:`1 - \alpha`. The cotangent of a per-example loss is one scalar per
    example, so the forward pass forms both gradients up to that scalar, from
    its one exponential per element, and saves them instead of the inputs;
    the backward pass is a multiply. Under ``jax.jit`` an unused one (say the
    labels' gradient) is never computed.
  """
  fn = "softmax_cross_entropy"
  logits = _checks.as_inexact(logits, "logits", fn)
  labels = _label_distribution(labels, logits, fn)
  shape = _checks.broadcast_pair(logits, labels, "logits", "labels", fn)
  axes = _checks.canonical_axes(axis, len(shape), fn)
  mask = _checks.as_mask(where, shape, axes, fn)
  alpha = _checks.static_fraction(label_smoothing, "label_smoothing", fn)
  if len(axes) > 1:
    logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
    logits, labels, mask, axes = flat_class_axes(logits, labels, mask, axes)
  return _softmax_ce_jit(logits, labels, mask, axes, alpha)


def _label_distribution(labels, logits, fn) -> jax.Array:
  """Floating, integer or boolean labels (one-hot or soft), as optax takes."""
  labels = _checks.as_array(labels)
  kind = _checks.dtype_kind(labels.dtype)
  if kind in ("bool", "floating"):
    return labels
  batch_shape = logits.shape[:-1]
  if kind != "integer" or (labels.shape == batch_shape and labels.ndim < logits.ndim):
    raise TypeError(
      f"{fn}: labels must be a label distribution over the classes (floating,"
      f" or integer or boolean one-hot) broadcasting to the logits"
      f" {logits.shape}; got {labels.dtype} with shape {labels.shape}. For"
      " class indices use softmax_cross_entropy_with_integer_labels."
    )
  return labels


def _softmax_ce_prepared(logits, labels, where, axes, alpha):
  """Broadcasts and converts one-hot labels (tuple axes are flat by now)."""
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(logits.dtype)  # integer or boolean one-hot
  shape = jnp.broadcast_shapes(logits.shape, labels.shape)
  logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
  # inside shard_map, one varying type: the cotangent of an input that does
  # not vary along a mesh axis is summed over it (the cast's transpose)
  return _softmax_ce(*same_varying_axes(logits, labels, where), axes, alpha)


def _smoothed(y, where, axes, alpha):
  """(1 - alpha) y + alpha / C over the unmasked classes, in the compute dtype."""
  if alpha:
    y = (1.0 - alpha) * y + alpha / num_classes(y.shape, axes, where, y.dtype)
  return _masked_labels(y, where)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softmax_ce(logits, labels, where, axes, alpha):
  return _softmax_ce_fwd(logits, labels, where, axes, alpha)[0]


def _softmax_ce_fwd(logits, labels, where, axes, alpha):
  z = masked(upcast(logits), where)
  y = _smoothed(upcast(labels), where, axes, alpha)
  e, s, shift = exp_normalizer(z, axes)
  small = logits.dtype != z.dtype  # 16-bit logits
  lp = log_probs(z, shift, log_norm_of(z, e, s, shift, axes, small_losses_exact=small))
  live = s != 0.0  # not an empty slice (NaN slices stay live, and NaN)
  # 0 * log 0 = 0, with the log replaced before the product (double where),
  # so that no NaN is formed for jax.debug_nans or checkify to see
  none = y == 0
  loss = -jnp.sum(
    jnp.where(none, 0.0, y * jnp.where(none, 0.0, lp)), axes, keepdims=True
  )
  loss = jnp.where(live, loss, 0.0)
  out = jnp.squeeze(loss, axes).astype(jnp.result_type(logits, labels))
  # d/dz: a * sum(y) - y, y smoothed;  d/dy: -(1 - alpha) log a. Both are
  # formed here from the one exp per element, as the cotangent is one scalar
  # per example. log a is -inf at masked entries and in empty slices: it is
  # selected away before the product, or the second derivative is 0 * inf.
  # (The bwd zeroes empty slices: selecting here too measurably slows XLA's
  # fusion of this pass with the bwd multiply.)
  keep = live if where is None else live & where
  dz = ratio(e, s) * jnp.sum(y, axes, keepdims=True) - y
  dy = jnp.where(keep, -(1.0 - alpha) * lp, 0.0)
  # saves dz, dy [..., C] in the inputs' dtypes, the per-example live flag and
  # the mask; logits and labels are not kept
  return out, (dz.astype(logits.dtype), dy.astype(labels.dtype), live, where)


def _masked_labels(y: jax.Array, where: jax.Array | None) -> jax.Array:
  """Label mass on masked classes is dropped (masking means slicing)."""
  return y if where is None else jnp.where(where, y, 0.0)


def _softmax_ce_bwd(axes, alpha, res, g):
  dz, dy, live, where = res
  g = jnp.expand_dims(upcast(g), axes)
  keep = live if where is None else live & where
  dz_out = jnp.where(live, g * upcast(dz), 0.0).astype(dz.dtype)
  dy_out = jnp.where(keep, times_cotangent(g, upcast(dy)), 0.0).astype(dy.dtype)
  return dz_out, dy_out, None


_softmax_ce.defvjp(_softmax_ce_fwd, _softmax_ce_bwd)
# Checked arguments go through one compiled call, as in jax.nn: eager calls
# then cost one dispatch instead of one per primitive.
_softmax_ce_jit = jax.jit(_softmax_ce_prepared, static_argnums=(3, 4))
