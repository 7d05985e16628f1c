r"""poly_loss_cross_entropy: the soft-label cross-entropy plus the first
polynomial term of its Taylor expansion, :math:`\epsilon (1 - p_t)` (Poly-1)."""

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
  in_compute_dtype,
  log_norm_of,
  log_probs,
  masked,
  ratio,
  same_varying_axes,
  times_cotangent,
  upcast,
)
from jaxsmx._soft_labels import _label_distribution, _masked_labels


@array_inputs
def poly_loss_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  epsilon: jax.typing.ArrayLike = 2.0,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Poly-1 loss: the cross-entropy plus :math:`\epsilon (1 - p_t)`.

  .. math::
    L(z, y) = -\sum_i y_i \log a_i + \epsilon \sum_i y_i (1 - a_i),
    \qquad a = \mathrm{softmax}(z)

  For a one-hot label, :math:`\sum_i y_i (1 - a_i) = 1 - p_t`: the first
  term of the expansion :math:`-\log p_t = \sum_{j \ge 1} (1 - p_t)^j / j`,
  whose coefficient becomes :math:`1 + \epsilon`. A drop-in replacement for
  :func:`optax.losses.poly_loss_cross_entropy`, with a closed-form gradient,
  also with respect to the labels.

  Args:
    logits: ``[..., num_classes]``, floating.
    labels: ``[..., num_classes]`` label distribution (soft, or one-hot),
      broadcasting against ``logits`` as in
      :func:`softmax_cross_entropy`; integer and boolean labels are converted
      to the logits' dtype.
    epsilon: keyword-only coefficient :math:`\epsilon` of the polynomial
      term (the paper's 2.0 for ImageNet classification, -1.0 for
      detection); a number or an array broadcasting to the batch shape
      ``[...]``.
    axis: keyword-only; the class axis or axes.
    where: keyword-only boolean mask, as in :func:`softmax_cross_entropy`:
      of the logits' shape, or of lower rank for one flag per example.
      Masking means slicing; label mass on a masked class is dropped.

  Returns:
    ``[...]``: per-example losses, in the promoted dtype of the logits and
    labels (integer and boolean labels count as the logits' dtype).

  Edge cases: as :func:`softmax_cross_entropy`: a :math:`-\infty` logit is a
  class of probability 0, which costs :math:`+\infty` only if the label puts
  mass there; an all :math:`-\infty` or fully masked slice gives 0 with
  gradient 0; a :math:`+\infty` or NaN logit makes the example NaN.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> logits = jnp.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
    >>> loss = jaxsmx.poly_loss_cross_entropy(logits, labels, epsilon=2.0)
    >>> print(np.round(np.asarray(loss), 4))
    [0.4823 1.2567]

  Notes:
    With :math:`S = \sum_i y_i` and :math:`\bar a = \sum_i y_i a_i`:
    :math:`\partial L/\partial z_j = a_j S - y_j - \epsilon\, a_j (y_j -
    \bar a)`, :math:`\partial L/\partial y_i = -\log a_i + \epsilon (1 -
    a_i)`, :math:`\partial L/\partial\epsilon = S - \bar a`. As for
    :func:`softmax_cross_entropy`, the cotangent is one scalar per example,
    so the forward pass forms the gradients from its one exponential per
    element and saves them; the backward pass is a multiply.

  References:
    Leng et al., `PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions <https://arxiv.org/abs/2204.12511>`_, ICLR
    2022.
  """
  fn = "poly_loss_cross_entropy"
  logits = _checks.as_inexact(logits, "logits", fn)
  labels = _label_distribution(labels, logits, fn)
  shape = _checks.broadcast_pair(logits, labels, "logits", "labels", fn)
  axes = _checks.canonical_axes(axis, len(shape), fn)
  mask = _checks.as_mask(where, shape, axes, fn)
  epsilon = _epsilon(epsilon, shape, axes, fn)
  if len(axes) > 1:
    logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
    logits, labels, mask, axes = flat_class_axes(logits, labels, mask, axes)
  return _poly_jit(logits, labels, mask, epsilon, axes)


def _epsilon(epsilon, shape, axes, fn) -> jax.Array:
  """A real number or array that broadcasts to the batch shape."""
  epsilon = _checks.as_array(epsilon)
  batch = tuple(d for i, d in enumerate(shape) if i not in axes)
  if _checks.dtype_kind(epsilon.dtype) not in ("integer", "floating"):
    raise TypeError(
      f"{fn}: epsilon must be a real number or array; got {epsilon.dtype}"
      f" with shape {epsilon.shape}."
    )
  try:
    ok = _checks.broadcast_shapes(tuple(epsilon.shape), batch) == batch
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"{fn}: epsilon must broadcast to the batch shape {batch} (the loss's"
      f" shape: the logits' without the class axes); got {epsilon.shape}."
      " Pass a number, or one value per example."
    )
  return epsilon


def _poly_prepared(logits, labels, where, epsilon, axes):
  """Broadcasts (tuple axes are flat by now); epsilon, in the logits' dtype,
  gets the class axis as a 1, so that it meets the per-example sums."""
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(logits.dtype)  # integer or boolean one-hot
  shape = jnp.broadcast_shapes(logits.shape, labels.shape)
  logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
  batch = tuple(d for i, d in enumerate(shape) if i not in axes)
  epsilon = jnp.broadcast_to(epsilon.astype(logits.dtype), batch)
  epsilon = jnp.expand_dims(epsilon, tuple(sorted(axes)))
  args = same_varying_axes(logits, labels, where, epsilon)
  return _poly(*args, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _poly(logits, labels, where, epsilon, axes):
  return _poly_fwd(logits, labels, where, epsilon, axes)[0]


def _poly_fwd(logits, labels, where, epsilon, axes):
  z, y, eps = in_compute_dtype(logits, labels, epsilon)
  z = masked(z, where)
  y = _masked_labels(y, where)
  e, s, shift = exp_normalizer(z, axes)
  small = logits.dtype != z.dtype  # 16-bit logits
  lp = log_probs(z, shift, log_norm_of(z, e, s, shift, axes, small_losses_exact=small))
  a = ratio(e, s)
  live = s != 0.0  # not an empty slice (NaN slices stay live, and NaN)
  # the cross-entropy, 0 log 0 = 0 with the log replaced first (double where)
  none = y == 0
  ce = -jnp.sum(jnp.where(none, 0.0, y * jnp.where(none, 0.0, lp)), axes, keepdims=True)
  # the polynomial term: sum y (1 - a) = S - <y, a>
  total = jnp.sum(y, axes, keepdims=True)
  mean_a = jnp.sum(y * a, axes, keepdims=True)
  one_minus_pt = jnp.sum(y * (1.0 - a), axes, keepdims=True)
  loss = jnp.where(live, ce + eps * one_minus_pt, 0.0)
  dtype = _promoted(logits.dtype, labels.dtype)
  out = jnp.squeeze(loss, axes).astype(dtype)
  # d/dz: a S - y - eps a (y - <y, a>);  d/dy: -log a + eps (1 - a);
  # d/deps: S - <y, a>. log a is -inf at masked entries and in empty slices:
  # it is selected away before the product
  keep = live if where is None else live & where
  dz = jnp.where(live, a * total - y - eps * a * (y - mean_a), 0.0)
  dy = jnp.where(keep, jnp.where(keep, -lp, 0.0) + eps * (1.0 - a), 0.0)
  deps = jnp.where(live, one_minus_pt, 0.0)
  # saves the three gradients (dz, dy [..., C], deps [..., 1]) in their
  # inputs' dtypes; logits and labels are not kept
  return out, (
    dz.astype(logits.dtype),
    dy.astype(labels.dtype),
    deps.astype(epsilon.dtype),
  )


def _promoted(a, b):
  """optax's result dtype for two floating dtypes, without jnp's implicit
  promotion (refused under jax.numpy_dtype_promotion('strict'))."""
  a, b = jnp.dtype(a), jnp.dtype(b)
  if a == b:
    return a
  if a.itemsize != b.itemsize:
    return a if a.itemsize > b.itemsize else b
  return jnp.dtype(jnp.float32)  # bfloat16 with float16


def _poly_bwd(axes, res, g):
  dz, dy, deps = res
  g = jnp.expand_dims(upcast(g), axes)
  return (
    (g * upcast(dz)).astype(dz.dtype),
    times_cotangent(g, upcast(dy)).astype(dy.dtype),
    None,
    (g * upcast(deps)).astype(deps.dtype),
  )


_poly.defvjp(_poly_fwd, _poly_bwd)
_poly_jit = jax.jit(_poly_prepared, static_argnums=(4,))
