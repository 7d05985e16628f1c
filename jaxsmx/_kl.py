r"""The Kullback-Leibler divergence of a target distribution from predicted
log-probabilities, in nats, reduced over the class axis or axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsmx._checks import Axis
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  as_array,
  class_sum,
  fill_masked,
  keep_unmasked,
  nan_or_zero,
  prepare_inputs,
  static_axis,
  times_cotangent,
)


@array_inputs
def kl_divergence(
  log_predictions: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Relative entropy :math:`D_{KL}(t \,\|\, q)` from log-predictions.

  .. math::
    D_{KL}(t \,\|\, q) = \sum_i t_i (\log t_i - \log q_i)
      = H(t, q) - H(t) \ge 0

  Same arguments, broadcasting, masking and result dtype as
  :func:`optax.losses.kl_divergence`.

  Args:
    log_predictions: ``[..., num_classes]``, :math:`\log q`, for example
      from :func:`log_softmax`.
    targets: target probabilities :math:`t`; the two broadcast against each
      other as in NumPy (for example one target distribution
      ``[num_classes]`` for a batch).
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to the inputs' broadcast shape as in
      NumPy (a ``(num_classes,)`` mask masks classes in every example);
      masked entries are left out.

  Returns:
    ``[...]``: the broadcast shape without the class axes, in the promoted
    dtype of the inputs.

  Edge cases: a term with :math:`t_i = 0` is 0, also when
  :math:`\log q_i = -\infty` (a NaN :math:`\log q_i` still makes the slice
  NaN). A term with :math:`t_i > 0` and
  :math:`\log q_i = -\infty` is :math:`+\infty`. The gradient with respect to
  a zero target is the one-sided derivative :math:`-\infty`
  (:math:`+\infty` if also :math:`\log q_i = -\infty`), never NaN; optax
  gives NaN there.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> t = jnp.array([0.5, 0.5, 0.0])
    >>> log_q = jnp.log(jnp.array([0.25, 0.25, 0.5]))
    >>> print(jnp.round(jaxsmx.kl_divergence(log_q, t), 4))
    0.6931

  Notes:
    Gradient: :math:`\partial D/\partial \log q_i = -t_i`,
    :math:`\partial D/\partial t_i = \log t_i + 1 - \log q_i`. Residuals:
    the inputs. Each gradient is computed in float32 (or the inputs' wider
    dtype), summed over the axes its input was broadcast along, and rounded
    once, to its input's dtype. Inside ``shard_map``, the gradient of an
    input that does not vary along a mesh axis is summed over that axis.
  """
  return _kl_divergence_jit(
    as_array(log_predictions),
    as_array(targets),
    static_axis(axis, "kl_divergence"),
    as_array(where),
  )


def _kl_divergence_prepared(log_predictions, targets, axis, where):
  lq, t, mask, finish = prepare_inputs(
    "kl_divergence", axis, where, log_predictions=log_predictions, targets=targets
  )
  return finish(_kl_divergence(lq, t, mask))


_kl_divergence_jit = jax.jit(_kl_divergence_prepared, static_argnums=(2,))


@jax.custom_vjp
def _kl_divergence(lq, t, where):
  return _kl_divergence_fwd(lq, t, where)[0]


def _kl_divergence_fwd(lq, t, where):
  lq_, t_ = fill_masked(where, lq, 0.0), fill_masked(where, t, 1.0)
  zero = t_ == 0
  # 0 (log 0 - log q) = 0, but a NaN log q stays NaN; both operands are made
  # safe where t = 0 first, so that no -inf + inf or 0 * inf is formed
  gap = jnp.log(jnp.where(zero, 1.0, t_)) - jnp.where(zero, 0.0, lq_)
  terms = jnp.where(zero, nan_or_zero(lq_), t_ * gap)
  # saves both inputs
  return class_sum(keep_unmasked(where, terms)), (lq, t, where)


def _kl_divergence_bwd(res, g):
  # d/dlog q: -t;  d/dt: log t + 1 - log q (-inf at t = 0, +inf if also
  # log q = -inf: the one-sided derivatives)
  lq, t, where = res
  lq, t = fill_masked(where, lq, 0.0), fill_masked(where, t, 1.0)
  zero = t == 0
  dt = jnp.log(jnp.where(zero, 1.0, t)) + 1.0 - jnp.where(zero, 0.0, lq)
  at_zero = jnp.where(lq == -jnp.inf, jnp.inf, jnp.where(jnp.isnan(lq), lq, -jnp.inf))
  dt = jnp.where(zero, at_zero, dt)
  return (
    keep_unmasked(where, -g * t),
    keep_unmasked(where, times_cotangent(g, dt)),
    None,
  )


_kl_divergence.defvjp(_kl_divergence_fwd, _kl_divergence_bwd)
