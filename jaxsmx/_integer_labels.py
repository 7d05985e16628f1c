r"""softmax_cross_entropy_with_integer_labels: the cross-entropy of class
indices against the softmax of logits, one value per example; the labels'
rules (ignore_index, out-of-range labels, masked targets) live here."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  exp_normalizer,
  flat_class_axes,
  is_empty,
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
def softmax_cross_entropy_with_integer_labels(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  label_smoothing: float = 0.0,
  ignore_index: int | None = None,
  class_weights: jax.typing.ArrayLike | None = None,
  check_labels: bool = False,
) -> jax.Array:
  r"""Cross-entropy between integer class labels and the softmax of logits.

  .. math::
    L(z, c) = -\log \mathrm{softmax}(z)_c = \log\sum_k e^{z_k} - z_c

  With label smoothing :math:`\alpha` over :math:`C` classes,
  :math:`L = -(1-\alpha)\log a_c - \frac{\alpha}{C}\sum_k \log a_k`; with
  class weights :math:`w`, each class's term is weighted by its class's
  weight, as in torch:

  .. math::
    L = -(1-\alpha)\, w_c \log a_c - \frac{\alpha}{C}\sum_k w_k \log a_k .

  A drop-in replacement for
  :func:`optax.losses.softmax_cross_entropy_with_integer_labels` (tuple axes
  and per-example ``where`` included), and for
  ``torch.nn.functional.cross_entropy(..., reduction='none')`` in
  ``label_smoothing``, ``ignore_index`` and ``weight`` (``class_weights``).

  Args:
    logits: ``[..., num_classes]``, floating.
    labels: ``[...]`` integer class indices of any integer dtype: the
      logits' shape without the class axes (or broadcasting to it). With a
      tuple ``axis``, a label is the flat (C-order) index into the slice
      ``logits[axis]``, axes taken in the order given.
    axis: the class axis or axes.
    where: boolean mask of ``logits.shape`` (masks classes) or of lower rank
      (one flag per example, broadcast to the labels' shape, as in optax).
      Masking means slicing, and agrees with the one-hot labels under the
      same mask: an example whose target class is
      masked out is dropped (loss 0, gradient 0).
      An example masked out entirely gives 0 whatever its label, which is
      never read (as in optax): padding rows may hold any label.
    label_smoothing: keyword-only :math:`\alpha \in [0, 1]`, over the unmasked
      classes.
    ignore_index: keyword-only label value (for example -100) whose examples
      get loss 0 and gradient 0.
    class_weights: keyword-only ``[num_classes]`` weight :math:`w_k` of each
      class (torch's ``weight``; with a tuple ``axis``, indexed by the flat
      class index), floating, or None for 1. It multiplies the label's term
      by :math:`w_c` and each class's smoothing term by :math:`w_k`; the
      result stays one loss per example. torch's ``reduction="mean"`` is the
      sum of these losses divided by the summed :math:`w_c` of the examples
      that count (neither ignored nor dropped); the fused
      :func:`linear_softmax_cross_entropy` forms that mean itself.
      Differentiable (torch refuses its gradient).
    check_labels: keyword-only; ``True`` reports bad labels with
      :func:`jax.experimental.checkify.check`: labels outside
      ``[0, num_classes)`` that are not ``ignore_index``, and labels whose
      class ``where`` masks out. The message names the valid range and shows
      the labels. An eager call raises
      :class:`~jax.experimental.checkify.JaxRuntimeError` at once; a traced
      one (under :func:`jax.jit`, :func:`jax.vmap`, :func:`jax.grad`) must be
      wrapped in ``checkify.checkify(f, errors=checkify.user_checks)``, or
      JAX refuses the unfunctionalized check when it traces. ``False`` (the
      default) adds nothing to the program: no effect, no callback.

  Returns:
    ``[...]``: per-example losses in the logits' dtype.

  Edge cases: a label outside ``[0, num_classes)`` that is not
  ``ignore_index``, in an example that ``where`` keeps, gives NaN in its loss
  and in its row of the gradient; it never wraps around (optax reads -1 as
  the last class), and it needs no check to show: ``check_labels=True``
  says which labels, and why. A target logit of :math:`-\infty` costs
  :math:`+\infty`. An all :math:`-\infty` or fully masked slice gives 0 with
  gradient 0. A :math:`+\infty` or NaN logit makes the example NaN. A
  class of weight 0 adds 0, even where its logit is :math:`-\infty` (torch:
  NaN).

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> loss = jaxsmx.softmax_cross_entropy_with_integer_labels(
    ...     logits, jnp.array([0, 1]))
    >>> print(np.round(np.asarray(loss), 4))
    [0.2761 2.9518]

  Notes:
    Gradient: :math:`\partial L/\partial z = a - (1-\alpha)\,\mathrm{onehot}(c)
    - \alpha/C`, with :math:`a = \mathrm{softmax}(z)`; with class weights
    :math:`a\,W - (1-\alpha) w_c\,\mathrm{onehot}(c) - \alpha w / C`, with
    :math:`W = (1-\alpha) w_c + \frac{\alpha}{C}\sum_k w_k`, and
    :math:`\partial L/\partial w_k = (1-\alpha)[k = c](-\log a_c)
    - \frac{\alpha}{C}\log a_k`. The cotangent is one
    scalar per example, so the forward pass forms this gradient, from its one
    exponential per element, and saves it in place of the logits (same size,
    the logits' dtype), with two per-example flags; no softmax is kept beside
    the logits, and the backward pass is one multiply. With
    ``class_weights`` the forward pass also keeps each element's
    :math:`\partial L/\partial w_k` (``[..., C]``, in float32 or wider), for
    the class weights' gradient.
  """
  fn = "softmax_cross_entropy_with_integer_labels"
  logits = _checks.as_inexact(logits, "logits", fn)
  axes = _checks.canonical_axes(axis, logits.ndim, fn)
  batch_shape = tuple(d for i, d in enumerate(logits.shape) if i not in axes)
  labels = _checks.as_integer_labels(labels, batch_shape, fn, logits.shape, axes)
  mask = _checks.as_mask(where, logits.shape, axes, fn)
  alpha = _checks.static_fraction(label_smoothing, "label_smoothing", fn)
  ignore_index = _checks.static_index(ignore_index, "ignore_index", fn)
  check = _checks.static_flag(check_labels, "check_labels", fn)
  num_classes_ = math.prod(logits.shape[a] for a in axes)
  at = f"logits {logits.shape}, axis {axes[0] if len(axes) == 1 else axes}"
  cw = _checks.as_class_weights(class_weights, num_classes_, fn, at)
  if len(axes) > 1:
    logits, labels, mask, axes = flat_class_axes(logits, labels, mask, axes)
  args = (logits, labels, mask, cw, axes, alpha, ignore_index)
  if not check:
    return _integer_ce_jit(*args)
  if _checks.is_concrete(logits, labels, mask):
    return _integer_ce_checkify(*args)  # eager: a failed check raises here
  return _integer_ce_checkify_jit(*args)


def _integer_ce_prepared(logits, labels, where, cw, axes, alpha, ignore_index):
  """Broadcasts the labels to the batch shape, then the loss."""
  labels = _batch_labels(logits, labels, axes)
  logits, cw = _like_logits(logits, cw)
  return _integer_ce(logits, labels, where, cw, axes, alpha, ignore_index)


def _like_logits(logits, cw):
  """Inside a user's shard_map, the class weights marked as varying like the
  logits (and the other way round), so that the rule's d/dw, a sum over this
  device's rows, is summed over the devices by the cast's transpose."""
  if cw is None:
    return logits, cw
  return same_varying_axes(logits, cw)


def _batch_labels(logits, labels, axes):
  batch = tuple(d for i, d in enumerate(logits.shape) if i not in axes)
  return jnp.broadcast_to(labels, batch)


def _integer_ce_checkify(logits, labels, where, cw, axes, alpha, ignore_index):
  """The loss, then checkify.check on its labels (check_labels=True)."""
  labels = _batch_labels(logits, labels, axes)
  # the check comes after the custom_vjp call: see _checks.report_labels
  logits, cw = _like_logits(logits, cw)
  out = _integer_ce(logits, labels, where, cw, axes, alpha, ignore_index)
  _report_bad_labels(
    "softmax_cross_entropy_with_integer_labels",
    logits.shape,
    labels,
    where,
    axes,
    ignore_index,
  )
  return out


_integer_ce_checkify_jit = jax.jit(_integer_ce_checkify, static_argnums=(4, 5, 6))


def _class_index(shape: tuple[int, ...], axes: tuple[int, ...]) -> jax.Array:
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


def _targets(shape, labels, where, axes, ignore_index):
  """Returns (onehot, dropped, invalid, masked_out): a class mask, three flags.

  dropped: ignore_index, a row that `where` masks out entirely, or a target
    class masked out by `where`; such rows give 0.
  invalid: outside [0, C), not ignore_index, in a row that `where` keeps;
    such rows become NaN. A row masked out entirely does not exist (masking
    means slicing, as in optax), so its label is never read.
  masked_out: an in-range target whose class `where` masks out in a row that
    has other classes left (reported under checkify).
  """
  num_classes = math.prod(shape[a] for a in axes)
  index, in_range, ignored = _checks.label_index(labels, num_classes, ignore_index)
  expand = functools.partial(jnp.expand_dims, axis=tuple(sorted(axes)))
  index, in_range, ignored = expand(index), expand(in_range), expand(ignored)
  onehot = (_class_index(shape, axes) == index) & in_range
  invalid = ~in_range & ~ignored
  none = jnp.zeros_like(in_range)
  if num_classes == 0:
    return onehot, ~none, none, none  # no class: an empty slice, no label read
  if where is None:
    return onehot, ignored, invalid, none
  present = jnp.any(where, axes, keepdims=True)
  kept = jnp.any(onehot & where, axes, keepdims=True)
  masked_out = present & in_range & ~ignored & ~kept
  dropped = ignored | ~present | masked_out
  return onehot, dropped, invalid & present, masked_out


def _report_bad_labels(fn, shape, labels, where, axes, ignore_index) -> None:
  """Out-of-range and masked-out labels, reported under checkify."""
  _, _, invalid, masked_out = _targets(shape, labels, where, axes, ignore_index)
  num_classes = math.prod(shape[a] for a in axes)
  _checks.report_labels(
    fn,
    labels,
    num_classes,
    ignore_index,
    invalid,
    None if where is None else masked_out,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _integer_ce(logits, labels, where, cw, axes, alpha, ignore_index):
  return _integer_ce_fwd(logits, labels, where, cw, axes, alpha, ignore_index)[0]


def _finish(values, void, invalid):
  """0 for dropped or empty rows, NaN for invalid labels.

  The NaN is log(-1), formed only in the rows with an invalid label: no NaN
  constant, so jax.debug_nans and checkify stay quiet on valid labels, and
  point at the bad ones.
  """
  poison = jnp.log(jnp.where(invalid, -1.0, 1.0).astype(values.dtype))
  return jnp.where(void, 0.0, values) + poison


def _target_logit(z, labels, onehot, axes):
  """z at the label's class, keepdims (any value for out-of-range labels).

  A gather along one class axis costs O(N). Under explicit sharding JAX
  refuses a gather whose output sharding it cannot infer, so there, and for
  tuple axes, the target is a masked sum, which partitions into one
  all-reduce of N values.
  """
  spec = getattr(getattr(jax.typeof(z), "sharding", None), "spec", None)
  if len(axes) == 1 and not (spec and any(s is not None for s in spec)):
    (axis,) = axes
    index = _checks.label_index(labels, z.shape[axis], None)[0]
    return jnp.take_along_axis(z, jnp.expand_dims(index, axis), axis, mode="clip")
  return jnp.sum(jnp.where(onehot, z, 0.0), axes, keepdims=True)


def _class_axis(v, z, axes):
  """The [C] vector v as an array of z's rank, C on the class axis, in z's
  dtype (the class axes are one axis here: see flat_class_axes)."""
  shape = [1] * z.ndim
  shape[axes[0]] = z.shape[axes[0]]
  return v.astype(z.dtype).reshape(shape)


def _integer_ce_fwd(logits, labels, where, cw, axes, alpha, ignore_index):
  z = masked(upcast(logits), where)
  e, s, shift = exp_normalizer(z, axes)
  small = logits.dtype != z.dtype  # 16-bit logits
  log_norm = log_norm_of(z, e, s, shift, axes, small_losses_exact=small)
  onehot, dropped, invalid, _ = _targets(z.shape, labels, where, axes, ignore_index)
  # -log a_c as (shift - z_c) + log_norm, not lse - z_c: exact for |z| ~ 1e30.
  # An empty slice has log_norm = -inf and z_c = -inf: 0 there, not inf - inf
  # (the row is zeroed below), so that no NaN is ever formed
  safe_norm = jnp.where(is_empty(log_norm), 0.0, log_norm)
  loss = (shift - _target_logit(z, labels, onehot, axes)) + safe_norm
  # w_c: the label's class weight (1 without class weights)
  w, w_c, nll = None, 1.0, loss
  if cw is not None:
    w = _class_axis(cw, z, axes)
    w_c = jnp.sum(jnp.where(onehot, w, 0.0), axes, keepdims=True)
    loss = _weighted(w_c, loss)
  count = num_classes(z.shape, axes, where, z.dtype)
  if alpha:
    lp = log_probs(z, shift, log_norm)
    kept_lp = lp if where is None else jnp.where(where, lp, 0.0)
    weighted_lp = kept_lp if w is None else _weighted(w, kept_lp)
    mean_nll = -jnp.sum(weighted_lp, axes, keepdims=True) / count
    loss = (1.0 - alpha) * loss + alpha * mean_nll
  void = dropped | is_empty(log_norm)
  out = jnp.squeeze(_finish(loss, void, invalid), axes).astype(logits.dtype)
  # d/dz: a W - (1 - alpha) w_c onehot - alpha / C w, with the total target
  # mass W = (1 - alpha) w_c + alpha / C sum(w) (1 without class weights),
  # formed here from the one exp per element, as the cotangent is one scalar
  # per example
  total, target = 1.0, onehot.astype(z.dtype)
  if w is not None:
    kept_w = w if where is None else jnp.where(where, w, 0.0)
    share = jnp.sum(kept_w, axes, keepdims=True) / count
    total = (1.0 - alpha) * w_c + alpha * share
    target = jnp.where(onehot, w_c, 0.0)
  grad = ratio(e, s) * total - (1.0 - alpha) * target
  if alpha:
    spread = alpha / num_classes(z.shape, axes, where, z.dtype)
    spread = spread if w is None else spread * w
    grad = grad - (spread if where is None else jnp.where(where, spread, 0.0))
  # d/dw_k: (1 - alpha) [k = c] nll - alpha / C log a_k, per element
  dw = None
  if w is not None:
    dw = (1.0 - alpha) * jnp.where(onehot, nll, 0.0)
    if alpha:
      dw = dw - alpha * kept_lp / count
    # 0 in dropped rows (their nll is +inf at a masked-out target): no inf
    # residual, which jax.debug_infs checks in an eager call
    dw = jnp.where(void, 0.0, dw)
  # saves that gradient [..., C] in the logits' dtype and two per-example
  # flags (and d/dw [..., C] with class weights); the logits are not kept,
  # and the bwd is one multiply
  return out, (grad.astype(logits.dtype), void, invalid, dw, cw)


def _weighted(w, x):
  """w * x, 0 where w = 0 (a class of weight 0 adds 0, even at x = inf)."""
  return jnp.where(w == 0, 0.0, w * x)


def _integer_ce_bwd(axes, alpha, ignore_index, res, g):
  grad, void, invalid, dw, cw = res
  dz = jnp.expand_dims(upcast(g), axes) * upcast(grad)
  dcw = None
  if dw is not None:
    # summed over the examples; an invalid label makes all of it NaN
    g_ = jnp.expand_dims(upcast(g), axes)
    per_example = _finish(times_cotangent(g_, dw), void, invalid)
    batch = tuple(d for d in range(dw.ndim) if d not in axes)
    dcw = jnp.sum(per_example, batch).astype(cw.dtype)
  return _finish(dz, void, invalid).astype(grad.dtype), None, None, dcw


_integer_ce.defvjp(_integer_ce_fwd, _integer_ce_bwd)
_integer_ce_jit = jax.jit(_integer_ce_prepared, static_argnums=(4, 5, 6))
