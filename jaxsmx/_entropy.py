r"""Entropy, cross-entropy and relative entropy, of logits and of probabilities.

All results are in nats and reduce over the class axis or axes. Zero
probabilities follow the limit :math:`0 \log 0 = 0`. Inputs broadcast against
each other, and a ``where`` mask against them, as in NumPy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._numerics import (
  as_array,
  batch_result,
  broadcast_shape,
  elementwise_mask,
  exp_normalizer,
  flat_inputs,
  log_of_sum,
  log_probs,
  masked,
  ratio,
  static_axis,
  times_cotangent,
)


def _prepare(fn, axis, where, **arrays):
  """Checks the floating inputs, broadcasts them and the mask (NumPy rules)
  and flattens their class axes to one last axis, in the compute dtype.

  Returns (flat arrays..., flat mask, finish), where finish turns a per-slice
  result [..., 1] into the broadcast shape without the class axes, in the
  inputs' promoted dtype.
  """
  xs = [_checks.as_floating(x, name, fn) for name, x in arrays.items()]
  shape = broadcast_shape(fn, **dict(zip(arrays, xs, strict=True)))
  axes = _checks.canonical_axes(axis, len(shape), fn)
  mask = elementwise_mask(fn, where, shape, axes)
  dtype = jnp.result_type(*xs)
  flat = flat_inputs(shape, axes, _checks.compute_dtype(dtype), *xs, mask)

  def finish(h):
    return batch_result(h, shape, axes).astype(dtype)

  return (*flat, finish)


def _nan_or_zero(x: jax.Array) -> jax.Array:
  """0, or NaN where x is NaN: the value of a 0-weighted term in x."""
  return jnp.where(jnp.isnan(x), x, 0.0)


def _fill(mask: jax.Array | None, x: jax.Array, value: float) -> jax.Array:
  """x with its masked-out entries set to a harmless `value`.

  Rules fill them before computing: masked entries may hold anything (0, NaN),
  and a where after the arithmetic alone would form a NaN (0 * inf) on the
  way, which jax.debug_nans and checkify.float_checks report, and which the
  second-order rules would differentiate.
  """
  return x if mask is None else jnp.where(mask, x, value)


def _keep(mask: jax.Array | None, values: jax.Array) -> jax.Array:
  """Zeroes the masked-out entries of an elementwise term or gradient."""
  return values if mask is None else jnp.where(mask, values, 0.0)


def _sum(x: jax.Array) -> jax.Array:
  return jnp.sum(x, -1, keepdims=True)


# ---------------------------------------------------------------------------
# softmax_entropy


def softmax_entropy(
  logits: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Entropy of the softmax distribution, computed from logits.

  .. math::
    H(\mathrm{softmax}(z)) = -\sum_i a_i \log a_i
      = \log\sum_k e^{z_k} - \sum_i a_i z_i,
    \qquad a = \mathrm{softmax}(z)

  Matches ``torch.distributions.Categorical(logits=z).entropy()``. JAX has no
  equivalent; ``-sum(softmax(z) * log_softmax(z))`` is NaN, in value and
  gradient, as soon as one logit is :math:`-\infty`.

  Args:
    logits: ``[..., num_classes]``, floating.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to ``logits.shape`` as in NumPy (a
      ``(num_classes,)`` mask masks classes in every slice): masked classes
      are left out, as if the slice were cut to the unmasked classes.

  Returns:
    ``[...]``: the logits' shape without the class axes, in their dtype.

  Edge cases: a :math:`-\infty` logit is a class of probability 0 and adds
  nothing, with gradient 0. An all :math:`-\infty` or fully masked slice gives
  0 with gradient 0. A :math:`+\infty` or NaN logit makes the slice NaN.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jnp.round(jaxsmx.softmax_entropy(jnp.array([0.0, 0.0, -jnp.inf])), 4))
    0.6931

  Notes:
    Gradient: :math:`\partial H/\partial z_i = -a_i(\log a_i + H)`. As the
    cotangent of :math:`H` is one scalar per slice, the forward pass forms
    this gradient from its one exponential per element and saves it as the
    only residual (the size of the logits, which are not kept); the backward
    pass is one multiply. 16-bit logits are computed in float32; a tuple
    ``axis`` is reduced as one flattened axis.
  """
  return _softmax_entropy_checked(as_array(logits), static_axis(axis), as_array(where))


@functools.partial(jax.jit, static_argnums=(1,))
def _softmax_entropy_checked(logits, axis, where):
  z, mask, finish = _prepare("softmax_entropy", axis, where, logits=logits)
  return finish(_softmax_entropy(z, mask))


@jax.custom_vjp
def _softmax_entropy(z, where):
  return _softmax_entropy_fwd(z, where)[0]


def _softmax_entropy_fwd(z, where):
  z = masked(z, where)
  e, s, shift = exp_normalizer(z, (z.ndim - 1,))
  a = ratio(e, s)
  # log a with -inf replaced by 0 before the product, so that a log a = 0
  # where a = 0 and its derivative (second-order rules take it) has no 0 * inf
  lp = log_probs(z, shift, log_of_sum(s))
  lp = jnp.where(lp == -jnp.inf, 0.0, lp)
  h = -_sum(a * lp)
  # d/dz: -a * (log a + H), formed here, as the cotangent is one scalar per
  # slice; saves that [..., C] and nothing else, so the bwd is one multiply
  return h, -a * (lp + h)


def _softmax_entropy_bwd(grad, g):
  return g * grad, None


_softmax_entropy.defvjp(_softmax_entropy_fwd, _softmax_entropy_bwd)


# ---------------------------------------------------------------------------
# entropy


def entropy(
  probs: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Shannon entropy of probabilities, with :math:`0 \log 0 = 0`.

  .. math::
    H(p) = -\sum_i p_i \log p_i

  Equals ``scipy.special.entr(p).sum(axis)``. Nothing is renormalised: pass
  probabilities that already sum to one if that is what you mean.

  Args:
    probs: ``[..., num_classes]``, floating.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to ``probs.shape`` as in NumPy;
      masked entries are left out.

  Returns:
    ``[...]``: the input's shape without the class axes, in its dtype.

  Edge cases: a zero probability adds 0. A negative probability gives
  :math:`-\infty`, as ``scipy.special.entr`` does, and a NaN gradient. The
  gradient :math:`-(\log p_i + 1)` is :math:`+\infty` at :math:`p_i = 0`: the
  true one-sided derivative, never NaN (0 where the cotangent is 0).

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jnp.round(jaxsmx.entropy(jnp.array([0.5, 0.5, 0.0])), 4))
    0.6931

  Notes:
    Gradient: :math:`\partial H/\partial p_i = -(\log p_i + 1)`. Residual:
    the input. 16-bit inputs are computed in float32.
  """
  return _entropy_checked(as_array(probs), static_axis(axis), as_array(where))


@functools.partial(jax.jit, static_argnums=(1,))
def _entropy_checked(probs, axis, where):
  p, mask, finish = _prepare("entropy", axis, where, probs=probs)
  return finish(_entropy(p, mask))


@jax.custom_vjp
def _entropy(p, where):
  return _entropy_fwd(p, where)[0]


def _entropy_fwd(p, where):
  # -p log p for p > 0 with log's argument made safe first (no 0 * -inf);
  # 0 at p = 0, -inf for p < 0 (as scipy.special.entr), NaN for NaN
  q = _fill(where, p, 0.0)
  pos = q > 0
  terms = -jnp.where(pos, q, 0.0) * jnp.log(jnp.where(pos, q, 1.0))
  edge = jnp.where(q == 0, 0.0, jnp.where(q < 0, -jnp.inf, q))
  # saves the input
  return _sum(jnp.where(pos, terms, edge)), (p, where)


def _entropy_bwd(res, g):
  # d/dp: -(log p + 1)
  p, where = res
  dp = times_cotangent(g, -(jnp.log(_fill(where, p, 1.0)) + 1.0))
  return _keep(where, dp), None


_entropy.defvjp(_entropy_fwd, _entropy_bwd)


# ---------------------------------------------------------------------------
# cross_entropy


def cross_entropy(
  p: jax.typing.ArrayLike,
  q: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Cross-entropy :math:`H(p, q)` of two probability vectors.

  .. math::
    H(p, q) = -\sum_i p_i \log q_i

  :math:`p` is the true distribution and :math:`q` the estimate. By Gibbs'
  inequality :math:`H(p, q) \ge H(p)`, with equality at :math:`q = p`. For
  logits, use :func:`softmax_cross_entropy`, which is stabler.

  Args:
    p: ``[..., num_classes]`` target probabilities.
    q: predicted probabilities; ``p`` and ``q`` broadcast against each other
      (for example one target distribution ``[num_classes]`` for a batch).
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask that broadcasts to the inputs' broadcast shape as in
      NumPy; masked entries are left out.

  Returns:
    ``[...]``: the broadcast shape without the class axes, in the promoted
    dtype of ``p`` and ``q``.

  Edge cases: a term with :math:`p_i = 0` is 0 whatever :math:`q_i` is (also
  :math:`q_i = 0`), and its gradient with respect to :math:`q_i` is 0; only a
  NaN :math:`q_i` still makes the slice NaN. A term
  with :math:`p_i > 0 = q_i` is :math:`+\infty`. The gradient
  :math:`-\log q_i` with respect to :math:`p_i` is :math:`+\infty` at
  :math:`q_i = 0`: the true derivative, never NaN.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> p = jnp.array([0.5, 0.5, 0.0])
    >>> print(jnp.round(jaxsmx.cross_entropy(p, jnp.array([0.25, 0.25, 0.5])), 4))
    1.3863

  Notes:
    Gradient: :math:`\partial H/\partial p_i = -\log q_i`,
    :math:`\partial H/\partial q_i = -p_i/q_i`. Residuals: the inputs. Each
    gradient is computed in float32 (or the inputs' wider dtype), summed over
    the axes its input was broadcast along, and rounded once, to its input's
    dtype. Inside ``shard_map``, the gradient of an input that does not vary
    along a mesh axis is summed over that axis.
  """
  return _cross_entropy_checked(
    as_array(p), as_array(q), static_axis(axis), as_array(where)
  )


@functools.partial(jax.jit, static_argnums=(2,))
def _cross_entropy_checked(p, q, axis, where):
  p, q, mask, finish = _prepare("cross_entropy", axis, where, p=p, q=q)
  return finish(_cross_entropy(p, q, mask))


@jax.custom_vjp
def _cross_entropy(p, q, where):
  return _cross_entropy_fwd(p, q, where)[0]


def _cross_entropy_fwd(p, q, where):
  p_, q_ = _fill(where, p, 0.0), _fill(where, q, 1.0)
  zero = p_ == 0
  # 0 log q = 0, but a NaN q stays NaN: it is never hidden as 0; log's
  # argument is made safe first, so that 0 * log 0 is never formed
  terms = jnp.where(zero, _nan_or_zero(q_), -p_ * jnp.log(jnp.where(zero, 1.0, q_)))
  # saves p and q
  return _sum(terms), (p, q, where)


def _cross_entropy_bwd(res, g):
  # d/dp: -log q;  d/dq: -p / q (0 where p = 0, also at q = 0)
  p, q, where = res
  p, q = _fill(where, p, 0.0), _fill(where, q, 1.0)
  dp = times_cotangent(g, -jnp.log(q))
  # -p / q is 0 at p = 0 for any q > 0 (and its derivative in p is -1/q);
  # only 0 / 0 needs a safe denominator
  dq = times_cotangent(g, -p / jnp.where((p == 0) & (q == 0), 1.0, q))
  return _keep(where, dp), _keep(where, dq), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


# ---------------------------------------------------------------------------
# kl_divergence


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
  return _kl_divergence_checked(
    as_array(log_predictions), as_array(targets), static_axis(axis), as_array(where)
  )


@functools.partial(jax.jit, static_argnums=(2,))
def _kl_divergence_checked(log_predictions, targets, axis, where):
  lq, t, mask, finish = _prepare(
    "kl_divergence", axis, where, log_predictions=log_predictions, targets=targets
  )
  return finish(_kl_divergence(lq, t, mask))


@jax.custom_vjp
def _kl_divergence(lq, t, where):
  return _kl_divergence_fwd(lq, t, where)[0]


def _kl_divergence_fwd(lq, t, where):
  lq_, t_ = _fill(where, lq, 0.0), _fill(where, t, 1.0)
  zero = t_ == 0
  # 0 (log 0 - log q) = 0, but a NaN log q stays NaN; both operands are made
  # safe where t = 0 first, so that no -inf + inf or 0 * inf is formed
  gap = jnp.log(jnp.where(zero, 1.0, t_)) - jnp.where(zero, 0.0, lq_)
  terms = jnp.where(zero, _nan_or_zero(lq_), t_ * gap)
  # saves both inputs
  return _sum(_keep(where, terms)), (lq, t, where)


def _kl_divergence_bwd(res, g):
  # d/dlog q: -t;  d/dt: log t + 1 - log q (-inf at t = 0, +inf if also
  # log q = -inf: the one-sided derivatives)
  lq, t, where = res
  lq, t = _fill(where, lq, 0.0), _fill(where, t, 1.0)
  zero = t == 0
  dt = jnp.log(jnp.where(zero, 1.0, t)) + 1.0 - jnp.where(zero, 0.0, lq)
  at_zero = jnp.where(lq == -jnp.inf, jnp.inf, jnp.where(jnp.isnan(lq), lq, -jnp.inf))
  dt = jnp.where(zero, at_zero, dt)
  return _keep(where, -g * t), _keep(where, times_cotangent(g, dt)), None


_kl_divergence.defvjp(_kl_divergence_fwd, _kl_divergence_bwd)
