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


@array_inputs
def kl_divergence_with_log_targets(
  log_predictions: jax.typing.ArrayLike,
  log_targets: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Relative entropy :math:`D_{KL}(t \,\|\, q)` from log-predictions and
  log-targets.

  .. math::
    D_{KL}(t \,\|\, q) = \sum_i e^{\log t_i} (\log t_i - \log q_i)

  :func:`kl_divergence` with the targets given as logs, as a teacher's
  :func:`log_softmax` in distillation gives them. Same arguments,
  broadcasting, masking and result dtype as
  :func:`optax.losses.kl_divergence_with_log_targets`.

  Args:
    log_predictions: ``[..., num_classes]``, :math:`\log q`.
    log_targets: :math:`\log t`; the two broadcast against each other as in
      NumPy.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to the inputs' broadcast shape as in
      NumPy; masked entries are left out.

  Returns:
    ``[...]``: the broadcast shape without the class axes, in the promoted
    dtype of the inputs.

  Edge cases: the rules of :func:`kl_divergence`, in log space: a term with
  :math:`\log t_i = -\infty` (or :math:`t_i = e^{\log t_i}` below the float
  range) is 0, also when :math:`\log q_i = -\infty` (a NaN
  :math:`\log q_i` still makes the slice NaN), where optax gives NaN. A
  term with :math:`t_i > 0` and :math:`\log q_i = -\infty` is
  :math:`+\infty`. The gradient with respect to such a log-target is its
  limit 0, or :math:`+\infty` where also :math:`\log q_i = -\infty` (the
  one-sided derivative, as for :func:`kl_divergence`); never NaN.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> log_t = jnp.log(jnp.array([0.5, 0.5, 0.0]))
    >>> log_q = jnp.log(jnp.array([0.25, 0.25, 0.5]))
    >>> print(jnp.round(jaxsmx.kl_divergence_with_log_targets(log_q, log_t), 4))
    0.6931

  Notes:
    Gradient: :math:`\partial D/\partial \log q_i = -t_i`,
    :math:`\partial D/\partial \log t_i = t_i (\log t_i + 1 - \log q_i)`,
    formed in the forward pass from its one exponential per element and
    saved with :math:`t`; computed in float32 (or the inputs' wider dtype)
    and rounded once, to each input's dtype.
  """
  return _kl_log_targets_jit(
    as_array(log_predictions),
    as_array(log_targets),
    static_axis(axis, "kl_divergence_with_log_targets"),
    as_array(where),
  )


def _kl_log_targets_prepared(log_predictions, log_targets, axis, where):
  lq, lt, mask, finish = prepare_inputs(
    "kl_divergence_with_log_targets",
    axis,
    where,
    log_predictions=log_predictions,
    log_targets=log_targets,
  )
  return finish(_kl_log_targets(lq, lt, mask))


_kl_log_targets_jit = jax.jit(_kl_log_targets_prepared, static_argnums=(2,))


@jax.custom_vjp
def _kl_log_targets(lq, lt, where):
  return _kl_log_targets_fwd(lq, lt, where)[0]


def _log_target_parts(lq, lt, where, t=None):
  """(t, zero, log t - log q, log q) with masked entries and zero targets made
  safe: no -inf + inf is formed where t = 0. t = exp(log t) unless given."""
  lq, lt = fill_masked(where, lq, 0.0), fill_masked(where, lt, 0.0)
  t = jnp.exp(lt) if t is None else t
  zero = t == 0
  return t, zero, jnp.where(zero, 0.0, lt) - jnp.where(zero, 0.0, lq), lq


def _kl_log_targets_fwd(lq, lt, where):
  t, zero, gap, lq_ = _log_target_parts(lq, lt, where)
  # 0 where t = 0 (a NaN log q stays NaN), t (log t - log q) elsewhere
  terms = jnp.where(zero, nan_or_zero(lq_), t * gap)
  # saves t (its one exp) and both inputs: the bwd forms only the gradients
  # asked for, d/dlog q from t alone
  return class_sum(keep_unmasked(where, terms)), (t, lq, lt, where)


def _kl_log_targets_bwd(res, g):
  # d/dlog q: -t;  d/dlog t: t (log t + 1 - log q), at t = 0 its limit 0
  # (+inf if also log q = -inf: the one-sided derivative)
  t, lq, lt, where = res
  _, zero, gap, lq_ = _log_target_parts(lq, lt, where, t)
  at_zero = jnp.where(lq_ == -jnp.inf, jnp.inf, jnp.where(jnp.isnan(lq_), lq_, 0.0))
  dlt = jnp.where(zero, at_zero, t * (gap + 1.0))
  return (
    keep_unmasked(where, -t * g),
    keep_unmasked(where, times_cotangent(g, dlt)),
    None,
  )


_kl_log_targets.defvjp(_kl_log_targets_fwd, _kl_log_targets_bwd)


@array_inputs
def convex_kl_divergence(
  log_predictions: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Generalized Kullback-Leibler divergence, for unnormalized measures.

  .. math::
    D(t \,\|\, q) = \sum_i t_i (\log t_i - \log q_i) + \sum_i (q_i - t_i),
    \qquad q_i = e^{\log q_i}

  The Bregman divergence of :math:`x \log x - x`: non-negative and 0 only
  at :math:`q = t` for any non-negative :math:`t, q`, normalized or not
  (for distributions it is :func:`kl_divergence`). Same arguments,
  broadcasting, masking and result dtype as
  :func:`optax.losses.convex_kl_divergence` (which optax 0.2.5 renamed
  ``generalized_kl_divergence``; jaxsmx keeps the name without a warning).

  Args:
    log_predictions: ``[..., num_classes]``, :math:`\log q`.
    targets: :math:`t \ge 0`; the two broadcast against each other as in
      NumPy.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to the inputs' broadcast shape as in
      NumPy; masked entries are left out.

  Returns:
    ``[...]``: the broadcast shape without the class axes, in the promoted
    dtype of the inputs.

  Edge cases: those of :func:`kl_divergence`: a zero target's
  :math:`t \log t` term is 0 (optax gives NaN where also
  :math:`\log q_i = -\infty`), and its gradient with respect to the target
  is the one-sided :math:`-\infty` (:math:`+\infty` where also
  :math:`\log q_i = -\infty`), never NaN.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> t = jnp.array([1.0, 2.0, 0.0])
    >>> log_q = jnp.log(jnp.array([1.0, 1.0, 0.5]))
    >>> print(np.round(float(jaxsmx.convex_kl_divergence(log_q, t)), 4))
    0.8863

  Notes:
    Gradient: :math:`\partial D/\partial \log q_i = q_i - t_i`,
    :math:`\partial D/\partial t_i = \log t_i - \log q_i`: those of
    :func:`kl_divergence` plus :math:`q_i` and :math:`-1`; the rule calls
    :func:`kl_divergence`'s own. Residuals: the inputs.

  References:
    Boyd and Vandenberghe, `Convex Optimization
    <https://stanford.edu/~boyd/cvxbook/bv_cvxbook.pdf>`_, p. 90.
  """
  return _convex_kl_jit(
    as_array(log_predictions),
    as_array(targets),
    static_axis(axis, "convex_kl_divergence"),
    as_array(where),
  )


def _convex_kl_prepared(log_predictions, targets, axis, where):
  lq, t, mask, finish = prepare_inputs(
    "convex_kl_divergence",
    axis,
    where,
    log_predictions=log_predictions,
    targets=targets,
  )
  return finish(_convex_kl(lq, t, mask))


_convex_kl_jit = jax.jit(_convex_kl_prepared, static_argnums=(2,))


@jax.custom_vjp
def _convex_kl(lq, t, where):
  return _convex_kl_fwd(lq, t, where)[0]


def _convex_kl_fwd(lq, t, where):
  kl, kl_res = _kl_divergence_fwd(lq, t, where)
  # the KL's terms, plus sum (q - t)
  mass = jnp.exp(fill_masked(where, lq, 0.0)) - fill_masked(where, t, 1.0)
  # saves the KL's residuals and log q
  return kl + class_sum(keep_unmasked(where, mass)), (kl_res, lq, where)


def _convex_kl_bwd(res, g):
  # d/dlog q: -t + q;  d/dt: (log t + 1 - log q) - 1: the KL's, plus q and -1
  kl_res, lq, where = res
  dlq, dt, _ = _kl_divergence_bwd(kl_res, g)
  q = jnp.exp(fill_masked(where, lq, 0.0))
  dlq = dlq + keep_unmasked(where, g * q)
  dt = dt - keep_unmasked(where, jnp.broadcast_to(g, dt.shape))
  return dlq, dt, None


_convex_kl.defvjp(_convex_kl_fwd, _convex_kl_bwd)
