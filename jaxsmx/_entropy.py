r"""Entropy, cross-entropy and relative entropy, of logits and of probabilities.

All results are in nats and reduce over the class axis or axes. Zero
probabilities follow the limit :math:`0 \log 0 = 0`. Inputs broadcast against
each other, and a ``where`` mask against them, as in NumPy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsmx._checks import Axis
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  as_array,
  class_sum,
  exp_normalizer,
  fill_masked,
  keep_unmasked,
  log_of_sum,
  log_probs,
  masked,
  nan_or_zero,
  prepare_inputs,
  ratio,
  static_axis,
  times_cotangent,
)

# ---------------------------------------------------------------------------
# softmax_entropy


@array_inputs
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
  return _softmax_entropy_jit(
    as_array(logits), static_axis(axis, "softmax_entropy"), as_array(where)
  )


def _softmax_entropy_prepared(logits, axis, where):
  z, mask, finish = prepare_inputs("softmax_entropy", axis, where, logits=logits)
  return finish(_softmax_entropy(z, mask))


_softmax_entropy_jit = jax.jit(_softmax_entropy_prepared, static_argnums=(1,))


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
  h = -class_sum(a * lp)
  # d/dz: -a * (log a + H), formed here, as the cotangent is one scalar per
  # slice; saves that [..., C] and nothing else, so the bwd is one multiply
  return h, -a * (lp + h)


def _softmax_entropy_bwd(grad, g):
  return g * grad, None


_softmax_entropy.defvjp(_softmax_entropy_fwd, _softmax_entropy_bwd)


# ---------------------------------------------------------------------------
# entropy


@array_inputs
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
  return _entropy_jit(as_array(probs), static_axis(axis, "entropy"), as_array(where))


def _entropy_prepared(probs, axis, where):
  p, mask, finish = prepare_inputs("entropy", axis, where, probs=probs)
  return finish(_entropy(p, mask))


_entropy_jit = jax.jit(_entropy_prepared, static_argnums=(1,))


@jax.custom_vjp
def _entropy(p, where):
  return _entropy_fwd(p, where)[0]


def _entropy_fwd(p, where):
  # -p log p for p > 0 with log's argument made safe first (no 0 * -inf);
  # 0 at p = 0, -inf for p < 0 (as scipy.special.entr), NaN for NaN
  q = fill_masked(where, p, 0.0)
  pos = q > 0
  terms = -jnp.where(pos, q, 0.0) * jnp.log(jnp.where(pos, q, 1.0))
  edge = jnp.where(q == 0, 0.0, jnp.where(q < 0, -jnp.inf, q))
  # saves the input
  return class_sum(jnp.where(pos, terms, edge)), (p, where)


def _entropy_bwd(res, g):
  # d/dp: -(log p + 1)
  p, where = res
  dp = times_cotangent(g, -(jnp.log(fill_masked(where, p, 1.0)) + 1.0))
  return keep_unmasked(where, dp), None


_entropy.defvjp(_entropy_fwd, _entropy_bwd)


# ---------------------------------------------------------------------------
# cross_entropy


@array_inputs
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
  return _cross_entropy_jit(
    as_array(p), as_array(q), static_axis(axis, "cross_entropy"), as_array(where)
  )


def _cross_entropy_prepared(p, q, axis, where):
  p, q, mask, finish = prepare_inputs("cross_entropy", axis, where, p=p, q=q)
  return finish(_cross_entropy(p, q, mask))


_cross_entropy_jit = jax.jit(_cross_entropy_prepared, static_argnums=(2,))


@jax.custom_vjp
def _cross_entropy(p, q, where):
  return _cross_entropy_fwd(p, q, where)[0]


def _cross_entropy_fwd(p, q, where):
  p_, q_ = fill_masked(where, p, 0.0), fill_masked(where, q, 1.0)
  zero = p_ == 0
  # 0 log q = 0, but a NaN q stays NaN: it is never hidden as 0; log's
  # argument is made safe first, so that 0 * log 0 is never formed
  terms = jnp.where(zero, nan_or_zero(q_), -p_ * jnp.log(jnp.where(zero, 1.0, q_)))
  # saves p and q
  return class_sum(terms), (p, q, where)


def _cross_entropy_bwd(res, g):
  # d/dp: -log q;  d/dq: -p / q (0 where p = 0, also at q = 0)
  p, q, where = res
  p, q = fill_masked(where, p, 0.0), fill_masked(where, q, 1.0)
  dp = times_cotangent(g, -jnp.log(q))
  # -p / q is 0 at p = 0 for any q > 0 (and its derivative in p is -1/q);
  # only 0 / 0 needs a safe denominator
  dq = times_cotangent(g, -p / jnp.where((p == 0) & (q == 0), 1.0, q))
  return keep_unmasked(where, dp), keep_unmasked(where, dq), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)
