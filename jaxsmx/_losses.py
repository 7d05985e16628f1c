r"""Cross-entropy losses on logits: soft labels, integer labels, sigmoid.

Every loss returns one value per example (no reduction), as optax does.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import checkify

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._numerics import (
    is_empty,
    log_probs,
    masked,
    normalizer,
    probs,
    times_cotangent,
    upcast,
)

# ---------------------------------------------------------------------------
# softmax_cross_entropy (soft labels)


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
    labels: ``[..., num_classes]`` label distribution (one-hot or soft), the
      same shape as ``logits``.
    axis: the class axis or axes.
    where: boolean mask of ``logits.shape``, or of the shape without the class
      axes (one flag per example). Masking means slicing:
      ``f(z, y, where=m) == f(z[m], y[m])``; label mass on a masked class is
      dropped, so the loss is never negative.
    label_smoothing: keyword-only :math:`\alpha \in [0, 1]`; the labels become
      :math:`(1-\alpha) y + \alpha / C`, with :math:`C` the number of unmasked
      classes.

  Returns:
    ``[...]``: per-example losses, in the promoted dtype of the inputs.

  Edge cases: a :math:`-\infty` logit is a class of probability 0: it costs
  nothing and gets gradient 0 unless the label puts mass there, which costs
  :math:`+\infty`. An all :math:`-\infty` or fully masked slice gives 0 with
  gradient 0. A :math:`+\infty` or NaN logit makes the example NaN.

  Gradient: :math:`\partial L/\partial z_i = a_i \sum_j y_j - y_i` (the
  seed's result, before one-hot) and :math:`\partial L/\partial y_i =
  -\log a_i`, with :math:`a = \mathrm{softmax}(z)`. Residuals: the inputs and
  two per-example normaliser scalars; :math:`a` is recomputed.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(jnp.round(jaxsmx.softmax_cross_entropy(logits, labels), 4))
    [0.2761 2.9518]
  """
  fn = "softmax_cross_entropy"
  logits = _checks.as_floating(logits, "logits", fn)
  labels = _checks.as_floating(labels, "labels", fn)
  _checks.same_shape(logits, labels, "logits", "labels", fn)
  axes = _checks.canonical_axes(axis, logits.ndim, fn)
  mask = _checks.as_mask(where, logits.shape, axes, fn)
  alpha = _checks.static_fraction(label_smoothing, "label_smoothing", fn)
  if alpha:
    labels = (1.0 - alpha) * labels + alpha / _num_classes(logits.shape, axes, mask)
  return _softmax_ce(logits, labels, mask, axes)


def _num_classes(shape, axes, where) -> jax.Array | int:
  """C, or the number of unmasked classes per slice (at least 1)."""
  if where is None:
    return math.prod(shape[a] for a in axes)
  count = jnp.sum(jnp.broadcast_to(where, shape), axes, keepdims=True)
  return jnp.maximum(count, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _softmax_ce(logits, labels, where, axes):
  return _softmax_ce_fwd(logits, labels, where, axes)[0]


def _softmax_ce_fwd(logits, labels, where, axes):
  z = masked(upcast(logits), where)
  y = masked_labels(upcast(labels), where)
  shift, log_norm = normalizer(z, axes)
  lp = log_probs(z, shift, log_norm)
  loss = -jnp.sum(jnp.where(y == 0, 0.0, y * lp), axes, keepdims=True)
  loss = jnp.where(is_empty(log_norm), 0.0, loss)
  out = jnp.squeeze(loss, axes).astype(jnp.result_type(logits, labels))
  # saves logits, labels, mask and the normaliser [..., 1] x 2; recomputes a
  return out, (logits, labels, where, shift, log_norm)


def masked_labels(y: jax.Array, where: jax.Array | None) -> jax.Array:
  """Label mass on masked classes is dropped (masking means slicing)."""
  return y if where is None else jnp.where(where, y, 0.0)


def _softmax_ce_bwd(axes, res, g):
  # d/dz: a * sum(y) - y;  d/dy: -log a
  logits, labels, where, shift, log_norm = res
  z = masked(upcast(logits), where)
  y = masked_labels(upcast(labels), where)
  lp = log_probs(z, shift, log_norm)
  g = jnp.expand_dims(upcast(g), axes)
  live = ~is_empty(log_norm)
  dz = jnp.exp(lp) * jnp.sum(y, axes, keepdims=True) - y
  dz = jnp.where(live, g * dz, 0.0)
  dy = jnp.where(live, times_cotangent(g, -lp), 0.0)
  if where is not None:
    dy = jnp.where(where, dy, 0.0)
  return dz.astype(logits.dtype), dy.astype(labels.dtype), None


_softmax_ce.defvjp(_softmax_ce_fwd, _softmax_ce_bwd)


# ---------------------------------------------------------------------------
# softmax_cross_entropy_with_integer_labels


def softmax_cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
) -> jax.Array:
  r"""Cross-entropy between integer class labels and the softmax of logits.

  .. math::
    L(z, c) = -\log \mathrm{softmax}(z)_c = \log\sum_k e^{z_k} - z_c

  With label smoothing :math:`\alpha` over :math:`C` classes,
  :math:`L = -(1-\alpha)\log a_c - \frac{\alpha}{C}\sum_k \log a_k`.

  A drop-in replacement for
  :func:`optax.losses.softmax_cross_entropy_with_integer_labels` (tuple axes
  and per-example ``where`` included), and for ``torch.nn.functional.
  cross_entropy(..., reduction='none')`` in ``label_smoothing`` and
  ``ignore_index``.

  Args:
    logits: ``[..., num_classes]``, floating.
    labels: ``[...]`` integer class indices: the logits' shape without the
      class axes. With a tuple ``axis``, a label is the flat (C-order) index
      into the slice ``logits[axis]``, axes taken in the order given.
    axis: the class axis or axes.
    where: boolean mask of ``logits.shape`` (masks classes) or of the labels'
      shape (masks examples). Masking means slicing, and agrees with the
      one-hot labels under the same mask: an example whose target class is
      masked out is dropped (loss 0, gradient 0) and reported under checkify.
    label_smoothing: keyword-only :math:`\alpha \in [0, 1]`, over the unmasked
      classes.
    ignore_index: keyword-only label value (for example -100) whose examples
      get loss 0 and gradient 0.

  Returns:
    ``[...]``: per-example losses in the logits' dtype.

  Edge cases: a label outside ``[0, num_classes)`` that is not
  ``ignore_index`` gives NaN in its loss and in its row of the gradient; it
  never wraps around (optax reads -1 as the last class). Under
  ``checkify.checkify(f, errors=checkify.user_checks)`` such labels, and
  labels whose class is masked out, are reported as errors; without checkify
  the check costs nothing. A target logit of :math:`-\infty` costs
  :math:`+\infty`. An all :math:`-\infty` or fully masked slice gives 0 with
  gradient 0. A :math:`+\infty` or NaN logit makes the example NaN.

  Gradient: :math:`\partial L/\partial z = a - (1-\alpha)\,\mathrm{onehot}(c)
  - \alpha/C`, with :math:`a = \mathrm{softmax}(z)`. Residuals: the logits,
  the labels and two per-example normaliser scalars; no N x C softmax is kept.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> print(jnp.round(
    ...     jaxsmx.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1])), 4))
    [0.2761 2.9518]
  """
  fn = "softmax_cross_entropy_with_integer_labels"
  logits = _checks.as_floating(logits, "logits", fn)
  axes = _checks.canonical_axes(axis, logits.ndim, fn)
  batch_shape = tuple(d for i, d in enumerate(logits.shape) if i not in axes)
  labels = _checks.as_integer_labels(labels, batch_shape, fn, logits.shape, axes)
  mask = _checks.as_mask(where, logits.shape, axes, fn)
  alpha = _checks.static_fraction(label_smoothing, "label_smoothing", fn)
  ignore_index = _checks.static_index(ignore_index, "ignore_index", fn)
  report_bad_labels(fn, logits.shape, labels, mask, axes, ignore_index)
  return _integer_ce(logits, labels, mask, axes, alpha, ignore_index)


def class_index(shape: tuple[int, ...], axes: tuple[int, ...]) -> jax.Array:
  """The flat class index, C order over `axes` as given, broadcastable to shape."""
  full = [1] * len(shape)
  for a in axes:
    full[a] = shape[a]
  index = jnp.zeros(full, jnp.int32)
  stride = 1
  for a in reversed(axes):
    index = index + lax.broadcasted_iota(jnp.int32, full, a) * stride
    stride *= shape[a]
  return index


def targets(shape, labels, where, axes, ignore_index):
  """Returns (onehot, dropped, invalid): a class mask and two per-row flags.

  dropped: ignore_index, or a target class masked out by `where`.
  invalid: outside [0, C) and not ignore_index; such rows become NaN.
  """
  num_classes = math.prod(shape[a] for a in axes)
  lab = labels.astype(jnp.promote_types(labels.dtype, jnp.int32))
  lab = jnp.expand_dims(lab, tuple(sorted(axes)))
  in_range = (lab >= 0) & (lab < num_classes)
  ignored = (
      jnp.zeros_like(in_range) if ignore_index is None else lab == ignore_index
  )
  onehot = class_index(shape, axes) == lab
  dropped = ignored
  if where is not None:
    kept = jnp.any(onehot & where, axes, keepdims=True)
    dropped = ignored | (in_range & ~kept)
  return onehot, dropped, ~in_range & ~ignored


def report_bad_labels(fn, shape, labels, where, axes, ignore_index) -> None:
  """checkify.debug_check for out-of-range and masked-out labels (free without
  checkify)."""
  _, dropped, invalid = targets(shape, labels, where, axes, ignore_index)
  num_classes = math.prod(shape[a] for a in axes)
  ignore = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
  checkify.debug_check(
      ~jnp.any(invalid),
      f"{fn}: labels must lie in [0, {num_classes}){ignore}; got labels {{}}."
      " Fix the labels, or pass ignore_index for padding.",
      labels,
  )
  if where is not None:
    lab = jnp.expand_dims(labels, tuple(sorted(axes)))
    if ignore_index is not None:
      dropped = dropped & (lab != ignore_index)
    checkify.debug_check(
        ~jnp.any(dropped),
        f"{fn}: some labels name a class that `where` masks out, so those"
        " examples are dropped (loss 0); labels {}. Unmask the target classes"
        " or mask the examples instead.",
        labels,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _integer_ce(logits, labels, where, axes, alpha, ignore_index):
  return _integer_ce_fwd(logits, labels, where, axes, alpha, ignore_index)[0]


def _finish(values, empty, dropped, invalid):
  """0 for dropped or empty rows, NaN for invalid labels."""
  values = jnp.where(dropped | empty, 0.0, values)
  return jnp.where(invalid, jnp.nan, values)


def _integer_ce_fwd(logits, labels, where, axes, alpha, ignore_index):
  z = masked(upcast(logits), where)
  shift, log_norm = normalizer(z, axes)
  onehot, dropped, invalid = targets(z.shape, labels, where, axes, ignore_index)
  lse = shift + log_norm
  loss = lse - jnp.sum(jnp.where(onehot, z, 0.0), axes, keepdims=True)
  if alpha:
    unmasked = z if where is None else jnp.where(where, z, 0.0)
    mean_z = jnp.sum(unmasked, axes, keepdims=True) / _num_classes(
        z.shape, axes, where
    )
    loss = (1.0 - alpha) * loss + alpha * (lse - mean_z)
  loss = _finish(loss, is_empty(log_norm), dropped, invalid)
  out = jnp.squeeze(loss, axes).astype(logits.dtype)
  # saves logits, labels, mask and the normaliser [..., 1] x 2; recomputes a
  return out, (logits, labels, where, shift, log_norm)


def _integer_ce_bwd(axes, alpha, ignore_index, res, g):
  # d/dz: a - (1 - alpha) * onehot - alpha / C
  logits, labels, where, shift, log_norm = res
  z = masked(upcast(logits), where)
  onehot, dropped, invalid = targets(z.shape, labels, where, axes, ignore_index)
  dz = probs(z, shift, log_norm) - (1.0 - alpha) * onehot
  if alpha:
    spread = alpha / _num_classes(z.shape, axes, where)
    dz = dz - (spread if where is None else jnp.where(where, spread, 0.0))
  dz = jnp.expand_dims(upcast(g), axes) * dz
  dz = _finish(dz, is_empty(log_norm), dropped, invalid)
  return dz.astype(logits.dtype), None, None


_integer_ce.defvjp(_integer_ce_fwd, _integer_ce_bwd)


# ---------------------------------------------------------------------------
# sigmoid_binary_cross_entropy


def sigmoid_binary_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Binary cross-entropy of a sigmoid output, elementwise.

  .. math::
    L(z, y) = -y \log\sigma(z) - (1 - y)\log(1 - \sigma(z)),
    \qquad \sigma(z) = \frac{1}{1 + e^{-z}}

  A drop-in replacement for :func:`optax.losses.sigmoid_binary_cross_entropy`.
  Its gradient :math:`\sigma(z) - y` is the seed's remark: unlike squared
  error, whose gradient :math:`(\sigma - y)\sigma(1-\sigma)` vanishes as the
  sigmoid saturates, the cross-entropy gradient stays proportional to the
  error, so learning does not slow down.

  Args:
    logits: any shape, floating.
    labels: targets in [0, 1], the same shape; integer or boolean labels are
      converted to the logits' dtype.

  Returns:
    Elementwise losses, the shape of ``logits``.

  Edge cases: exact for logits of any magnitude, :math:`\pm\infty`
  included: :math:`z = +\infty` with :math:`y = 1` costs 0 (optax gives NaN).

  Gradient: :math:`\partial L/\partial z = \sigma(z) - y`,
  :math:`\partial L/\partial y = -z`. Residuals: the inputs.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jnp.round(jaxsmx.sigmoid_binary_cross_entropy(
    ...     jnp.array([0.0, jnp.inf]), jnp.array([1.0, 1.0])), 4))
    [0.6931 0.    ]
  """
  fn = "sigmoid_binary_cross_entropy"
  logits = _checks.as_floating(logits, "logits", fn)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(logits.dtype)
  _checks.same_shape(logits, labels, "logits", "labels", fn)
  return _sigmoid_bce(logits, labels)


@jax.custom_vjp
def _sigmoid_bce(logits, labels):
  return _sigmoid_bce_fwd(logits, labels)[0]


def _sigmoid_bce_fwd(logits, labels):
  z, y = upcast(logits), upcast(labels)
  pos = jnp.where(y == 0, 0.0, -y * jax.nn.log_sigmoid(z))
  neg = jnp.where(y == 1, 0.0, -(1.0 - y) * jax.nn.log_sigmoid(-z))
  out = (pos + neg).astype(jnp.result_type(logits, labels))
  # saves the inputs
  return out, (logits, labels)


def _sigmoid_bce_bwd(res, g):
  # d/dz: sigmoid(z) - y;  d/dy: -z
  logits, labels = res
  z, y, g = upcast(logits), upcast(labels), upcast(g)
  dz = g * (jax.nn.sigmoid(z) - y)
  dy = times_cotangent(g, -z)
  return dz.astype(logits.dtype), dy.astype(labels.dtype)


_sigmoid_bce.defvjp(_sigmoid_bce_fwd, _sigmoid_bce_bwd)
