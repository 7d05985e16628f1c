r"""Softmax, log-softmax and logsumexp with closed-form reverse-mode rules.

Every function here reduces over one or more class axes. They share one rule
for the edges: masked entries count as :math:`-\infty`; a slice with no finite
mass (all :math:`-\infty`, or fully masked) has logsumexp :math:`-\infty` and
all its probabilities :math:`0`; a :math:`+\infty` or NaN anywhere in a slice
makes that whole slice NaN.
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
  upcast,
)

# ---------------------------------------------------------------------------
# softmax


def softmax(
  x: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Softmax: rescales a slice to probabilities that sum to one.

  .. math::
    \mathrm{softmax}(z)_i = \frac{e^{z_i}}{\sum_k e^{z_k}}

  A drop-in replacement for :func:`jax.nn.softmax` with the same arguments.

  Args:
    x: logits, ``[..., num_classes]``. Integers are promoted to the default
      float dtype; 16-bit floats are computed in float32.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask broadcastable to ``x.shape``; masked entries take no
      part and get probability 0.

  Returns:
    Probabilities with the shape and dtype of ``x``.

  Edge cases: a :math:`-\infty` logit gets probability 0. A slice that is all
  :math:`-\infty` or fully masked gives all zeros (``jax.nn.softmax`` gives
  NaN). A :math:`+\infty` or NaN logit makes its slice NaN.

  Gradient: :math:`\bar z = a \odot (g - \langle g, a\rangle)`; the residual is
  the output :math:`a` itself.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> with jnp.printoptions(precision=4):
    ...   print(jaxsmx.softmax(jnp.array([3.0, 1.0, -3.0])))
    [0.8789 0.1189 0.0022]
  """
  x = _checks.as_float_or_promote(x)
  axes = _checks.canonical_axes(axis, x.ndim, "softmax")
  mask = _checks.as_mask(where, x.shape, axes, "softmax", per_slice=False)
  return _softmax(x, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _softmax(x, where, axes):
  return _softmax_fwd(x, where, axes)[0]


def _softmax_fwd(x, where, axes):
  e, s, _ = exp_normalizer(masked(upcast(x), where), axes)
  a = ratio(e, s).astype(x.dtype)
  # saves the output a
  return a, a


def _softmax_bwd(axes, a, g):
  # d/dz: a * (g - sum(g * a))
  a32, g32 = upcast(a), upcast(g)
  dz = a32 * (g32 - jnp.sum(g32 * a32, axes, keepdims=True))
  return dz.astype(a.dtype), None


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


# ---------------------------------------------------------------------------
# log_softmax


def log_softmax(
  x: jax.typing.ArrayLike,
  axis: Axis = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Log-softmax: the logarithm of :func:`softmax`, computed stably.

  .. math::
    \mathrm{log\_softmax}(z)_i = z_i - \log \sum_k e^{z_k}

  A drop-in replacement for :func:`jax.nn.log_softmax`.

  Args:
    x: logits, ``[..., num_classes]``.
    axis: the class axis or axes; ``None`` means all axes.
    where: boolean mask broadcastable to ``x.shape``; masked entries give
      :math:`-\infty`.

  Returns:
    Log-probabilities with the shape and dtype of ``x``.

  Edge cases: logits of magnitude up to the dtype's maximum are exact. A
  :math:`-\infty` logit gives :math:`-\infty`; a slice that is all
  :math:`-\infty` or fully masked gives :math:`-\infty` throughout. A
  :math:`+\infty` or NaN logit makes its slice NaN.

  Gradient: :math:`\bar z = g - \mathrm{softmax}(z) \sum_k g_k`; the
  residual is softmax(z), which the forward pass forms anyway from the one
  exponential per element; masked entries get 0.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jaxsmx.log_softmax(jnp.array([1000.0, 0.0])).tolist())
    [0.0, -1000.0]
  """
  x = _checks.as_float_or_promote(x)
  axes = _checks.canonical_axes(axis, x.ndim, "log_softmax")
  mask = _checks.as_mask(where, x.shape, axes, "log_softmax", per_slice=False)
  return _log_softmax(x, mask, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _log_softmax(x, where, axes):
  return _log_softmax_fwd(x, where, axes)[0]


def _log_softmax_fwd(x, where, axes):
  z = masked(upcast(x), where)
  e, s, shift = exp_normalizer(z, axes)
  out = log_probs(z, shift, log_of_sum(s)).astype(x.dtype)
  # saves softmax(z), e / s, and the mask: the bwd needs no exp
  return out, (ratio(e, s), where)


def _log_softmax_bwd(axes, res, g):
  # d/dz: g - softmax(z) * sum(g)
  a, where = res
  g32 = upcast(g)
  if where is not None:
    g32 = jnp.where(where, g32, 0.0)
  dz = g32 - a * jnp.sum(g32, axes, keepdims=True)
  return dz.astype(g.dtype), None


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


# ---------------------------------------------------------------------------
# logsumexp


def logsumexp(
  x: jax.typing.ArrayLike,
  axis: Axis = None,
  where: jax.typing.ArrayLike | None = None,
  keepdims: bool = False,
) -> jax.Array:
  r"""Log of the sum of exponentials, computed without overflow.

  .. math::
    \mathrm{lse}(z) = \log \sum_k e^{z_k}
      = m + \log \sum_k e^{z_k - m},\quad m = \max_k z_k

  Matches :func:`jax.nn.logsumexp` without its ``b`` and ``return_sign``
  arguments.

  Args:
    x: input array.
    axis: axis or axes to reduce; ``None`` (the default) reduces all axes.
    where: boolean mask broadcastable to ``x.shape``; masked entries are left
      out of the sum.
    keepdims: keep the reduced axes with size 1.

  Returns:
    ``x.shape`` without the reduced axes (kept as 1 with ``keepdims``), in the
    dtype of ``x``.

  Edge cases: an empty (all :math:`-\infty` or fully masked) reduction gives
  :math:`-\infty` with gradient 0. A :math:`+\infty` or NaN entry gives NaN
  (``jax.nn.logsumexp`` gives :math:`+\infty` for :math:`+\infty`).

  Gradient: :math:`\bar z = g\,\mathrm{softmax}(z)`; the residual is
  softmax(z), formed in the forward pass from its one exponential per element.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jaxsmx.logsumexp(jnp.array([1e30, 1e30])))
    1e+30
  """
  x = _checks.as_float_or_promote(x)
  axes = _checks.canonical_axes(axis, x.ndim, "logsumexp")
  mask = _checks.as_mask(where, x.shape, axes, "logsumexp", per_slice=False)
  out = _logsumexp(x, mask, axes)
  return out if keepdims else jnp.squeeze(out, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _logsumexp(x, where, axes):
  return _logsumexp_fwd(x, where, axes)[0]


def _logsumexp_fwd(x, where, axes):
  e, s, shift = exp_normalizer(masked(upcast(x), where), axes)
  # saves softmax(z), e / s: the bwd needs no exp
  return (shift + log_of_sum(s)).astype(x.dtype), ratio(e, s)


def _logsumexp_bwd(axes, a, g):
  # d/dz: g * softmax(z)
  return (upcast(g) * a).astype(g.dtype), None


_logsumexp.defvjp(_logsumexp_fwd, _logsumexp_bwd)
