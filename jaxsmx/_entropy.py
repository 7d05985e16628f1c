r"""Entropy, cross-entropy and relative entropy, of logits and of probabilities.

All results are in nats and reduce over the class axis or axes. Zero
probabilities follow the limit :math:`0 \log 0 = 0`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._numerics import (
  exp_normalizer,
  log_of_sum,
  log_probs,
  masked,
  ratio,
  times_cotangent,
  upcast,
)


def _prepare(x, axis, where, fn, name):
  x = _checks.as_floating(x, name, fn)
  axes = _checks.canonical_axes(axis, x.ndim, fn)
  return x, axes, _checks.as_mask(where, x.shape, axes, fn)


def _nan_or_zero(x: jax.Array) -> jax.Array:
  """0, or NaN where x is NaN: the value of a 0-weighted term in x."""
  return jnp.where(jnp.isnan(x), x, 0.0)


def _fill(mask: jax.Array | None, x: jax.Array, value: float) -> jax.Array:
  """x with its masked-out entries set to a harmless `value`.

  A bwd rule fills them before computing: masked entries may hold anything
  (0, NaN), and a where after the arithmetic alone would leave a 0 * inf =
  NaN in the derivative of the rule that second-order differentiation takes.
  """
  return x if mask is None else jnp.where(mask, x, value)


def _keep(mask: jax.Array | None, values: jax.Array) -> jax.Array:
  """Zeroes the masked-out entries of an elementwise term or gradient."""
  return values if mask is None else jnp.where(mask, values, 0.0)


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
    axis: the class axis or axes.
    where: boolean mask of ``logits.shape`` (or of the shape without the class
      axes, selecting whole slices): masked classes are left out, as if the
      slice were cut to the unmasked classes.

  Returns:
    ``[...]``: the logits' shape without the class axes, in their dtype.

  Edge cases: a :math:`-\infty` logit is a class of probability 0 and adds
  nothing, with gradient 0. An all :math:`-\infty` or fully masked slice gives
  0 with gradient 0. A :math:`+\infty` or NaN logit makes the slice NaN.

  Gradient: :math:`\partial H/\partial z_i = -a_i(\log a_i + H)`. As the
  cotangent of :math:`H` is one scalar per slice, the forward pass forms this
  gradient from its one exponential per element and saves it as the only
  residual (the size of the logits, which are not kept); the backward pass is
  one multiply.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jnp.round(jaxsmx.softmax_entropy(jnp.array([0.0, 0.0, -jnp.inf])), 4))
    0.6931
  """
  logits, axes, mask = _prepare(logits, axis, where, "softmax_entropy", "logits")
  return _softmax_entropy(logits, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _softmax_entropy(logits, where, axes):
  return _softmax_entropy_fwd(logits, where, axes)[0]


def _softmax_entropy_fwd(logits, where, axes):
  z = masked(upcast(logits), where)
  e, s, shift = exp_normalizer(z, axes)
  a = ratio(e, s)
  # log a with -inf replaced by 0 before the product, so that a log a = 0
  # where a = 0 and its derivative (second-order rules take it) has no 0 * inf
  lp = log_probs(z, shift, log_of_sum(s))
  lp = jnp.where(lp == -jnp.inf, 0.0, lp)
  h = -jnp.sum(a * lp, axes, keepdims=True)
  out = jnp.squeeze(h, axes).astype(logits.dtype)
  # d/dz: -a * (log a + H), formed here, as the cotangent is one scalar per
  # slice; saves that [..., C] and nothing else, so the bwd is one multiply
  return out, -a * (lp + h)


def _softmax_entropy_bwd(axes, grad, g):
  dz = jnp.expand_dims(upcast(g), axes) * grad
  return dz.astype(g.dtype), None


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
    axis: the class axis or axes.
    where: boolean mask of ``probs.shape`` (or of the shape without the class
      axes): masked entries are left out.

  Returns:
    ``[...]``: the input's shape without the class axes, in its dtype.

  Edge cases: a zero probability adds 0. A negative probability gives
  :math:`-\infty`, as ``scipy.special.entr`` does, and a NaN gradient. The
  gradient :math:`-(\log p_i + 1)` is :math:`+\infty` at :math:`p_i = 0`: the
  true one-sided derivative, never NaN (0 where the cotangent is 0).

  Gradient: :math:`\partial H/\partial p_i = -(\log p_i + 1)`. Residual: the
  input.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jnp.round(jaxsmx.entropy(jnp.array([0.5, 0.5, 0.0])), 4))
    0.6931
  """
  probs, axes, mask = _prepare(probs, axis, where, "entropy", "probs")
  return _entropy(probs, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _entropy(probs, where, axes):
  return _entropy_fwd(probs, where, axes)[0]


def _entropy_fwd(probs, where, axes):
  p = upcast(probs)
  entr = jnp.where(
    p > 0, -p * jnp.log(p), jnp.where(p == 0, 0.0, jnp.where(p < 0, -jnp.inf, p))
  )
  h = jnp.sum(_keep(where, entr), axes)
  # saves the input
  return h.astype(probs.dtype), (probs, where)


def _entropy_bwd(axes, res, g):
  # d/dp: -(log p + 1)
  probs, where = res
  p = _fill(where, upcast(probs), 1.0)
  g = jnp.expand_dims(upcast(g), axes)
  dp = times_cotangent(g, -(jnp.log(p) + 1.0))
  return _keep(where, dp).astype(probs.dtype), None


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
    q: predicted probabilities, the same shape as ``p``.
    axis: the class axis or axes.
    where: boolean mask of ``p.shape`` (or of the shape without the class
      axes): masked entries are left out.

  Returns:
    ``[...]``, in the promoted dtype of ``p`` and ``q``.

  Edge cases: a term with :math:`p_i = 0` is 0 whatever :math:`q_i` is (also
  :math:`q_i = 0`), and its gradient with respect to :math:`q_i` is 0; only a
  NaN :math:`q_i` still makes the slice NaN. A term
  with :math:`p_i > 0 = q_i` is :math:`+\infty`. The gradient
  :math:`-\log q_i` with respect to :math:`p_i` is :math:`+\infty` at
  :math:`q_i = 0`: the true derivative, never NaN.

  Gradient: :math:`\partial H/\partial p_i = -\log q_i`,
  :math:`\partial H/\partial q_i = -p_i/q_i`. Residuals: the inputs.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> p = jnp.array([0.5, 0.5, 0.0])
    >>> print(jnp.round(jaxsmx.cross_entropy(p, jnp.array([0.25, 0.25, 0.5])), 4))
    1.3863
  """
  p, axes, mask = _prepare(p, axis, where, "cross_entropy", "p")
  q = _checks.as_floating(q, "q", "cross_entropy")
  _checks.same_shape(p, q, "p", "q", "cross_entropy")
  return _cross_entropy(p, q, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _cross_entropy(p, q, where, axes):
  return _cross_entropy_fwd(p, q, where, axes)[0]


def _cross_entropy_fwd(p, q, where, axes):
  p32, q32 = upcast(p), upcast(q)
  # 0 log q = 0, but a NaN q stays NaN: it is never hidden as 0
  terms = jnp.where(p32 == 0, _nan_or_zero(q32), -p32 * jnp.log(q32))
  h = jnp.sum(_keep(where, terms), axes)
  # saves p and q
  return h.astype(jnp.result_type(p, q)), (p, q, where)


def _cross_entropy_bwd(axes, res, g):
  # d/dp: -log q;  d/dq: -p / q (0 where p = 0, also at q = 0)
  p, q, where = res
  p32, q32 = _fill(where, upcast(p), 0.0), _fill(where, upcast(q), 1.0)
  g = jnp.expand_dims(upcast(g), axes)
  dp = times_cotangent(g, -jnp.log(q32))
  # -p / q is 0 at p = 0 for any q > 0 (and its derivative in p is -1/q);
  # only 0 / 0 needs a safe denominator
  q_safe = jnp.where((p32 == 0) & (q32 == 0), 1.0, q32)
  dq = times_cotangent(g, -p32 / q_safe)
  return _keep(where, dp).astype(p.dtype), _keep(where, dq).astype(q.dtype), None


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

  Same arguments and meaning as :func:`optax.losses.kl_divergence`.

  Args:
    log_predictions: ``[..., num_classes]``, :math:`\log q`, for example
      from :func:`log_softmax`.
    targets: target probabilities :math:`t`, the same shape.
    axis: the class axis or axes.
    where: boolean mask of the inputs' shape (or of the shape without the
      class axes): masked entries are left out.

  Returns:
    ``[...]``, in the promoted dtype of the inputs.

  Edge cases: a term with :math:`t_i = 0` is 0, also when
  :math:`\log q_i = -\infty` (a NaN :math:`\log q_i` still makes the slice
  NaN). A term with :math:`t_i > 0` and
  :math:`\log q_i = -\infty` is :math:`+\infty`. The gradient with respect to
  a zero target is the one-sided derivative :math:`-\infty`
  (:math:`+\infty` if also :math:`\log q_i = -\infty`), never NaN; optax
  gives NaN there.

  Gradient: :math:`\partial D/\partial \log q_i = -t_i`,
  :math:`\partial D/\partial t_i = \log t_i + 1 - \log q_i`. Residuals: the
  inputs.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> t = jnp.array([0.5, 0.5, 0.0])
    >>> log_q = jnp.log(jnp.array([0.25, 0.25, 0.5]))
    >>> print(jnp.round(jaxsmx.kl_divergence(log_q, t), 4))
    0.6931
  """
  log_predictions, axes, mask = _prepare(
    log_predictions, axis, where, "kl_divergence", "log_predictions"
  )
  targets = _checks.as_floating(targets, "targets", "kl_divergence")
  _checks.same_shape(
    log_predictions, targets, "log_predictions", "targets", "kl_divergence"
  )
  return _kl_divergence(log_predictions, targets, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _kl_divergence(log_predictions, targets, where, axes):
  return _kl_divergence_fwd(log_predictions, targets, where, axes)[0]


def _kl_divergence_fwd(log_predictions, targets, where, axes):
  lq, t = upcast(log_predictions), upcast(targets)
  # 0 (log 0 - log q) = 0, but a NaN log q stays NaN
  terms = jnp.where(t == 0, _nan_or_zero(lq), t * (jnp.log(t) - lq))
  d = jnp.sum(_keep(where, terms), axes)
  out_dtype = jnp.result_type(log_predictions, targets)
  # saves both inputs
  return d.astype(out_dtype), (log_predictions, targets, where)


def _kl_divergence_bwd(axes, res, g):
  # d/dlog q: -t;  d/dt: log t + 1 - log q
  log_predictions, targets, where = res
  lq, t = _fill(where, upcast(log_predictions), 0.0), _fill(where, upcast(targets), 1.0)
  g = jnp.expand_dims(upcast(g), axes)
  dlq = -g * t
  dt = jnp.log(t) + 1.0 - lq
  dt = jnp.where((t == 0) & (lq == -jnp.inf), jnp.inf, dt)
  dt = times_cotangent(g, dt)
  return (
    _keep(where, dlq).astype(log_predictions.dtype),
    _keep(where, dt).astype(targets.dtype),
    None,
  )


_kl_divergence.defvjp(_kl_divergence_fwd, _kl_divergence_bwd)
