r"""sigmoid_binary_cross_entropy: independent binary labels against the
sigmoid of logits, elementwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsmx import _checks
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  same_varying_axes,
  times_cotangent,
  upcast,
)


@array_inputs
def sigmoid_binary_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Binary cross-entropy of a sigmoid output, elementwise.

  .. math::
    L(z, y) = -y \log\sigma(z) - (1 - y)\log(1 - \sigma(z)),
    \qquad \sigma(z) = \frac{1}{1 + e^{-z}}

  A drop-in replacement for :func:`optax.losses.sigmoid_binary_cross_entropy`.
  Its gradient :math:`\sigma(z) - y` is the article's remark: unlike squared
  error, whose gradient :math:`(\sigma - y)\sigma(1-\sigma)` vanishes as the
  sigmoid saturates, the cross-entropy gradient stays proportional to the
  error, so learning does not slow down.

  Args:
    logits: any shape, floating.
    labels: targets in [0, 1], broadcasting against ``logits`` as in optax
      (a scalar such as ``1.0`` for a GAN loss, or ``[C]`` against
      ``[..., C]``); integer or boolean labels are converted to the logits'
      dtype.

  Returns:
    Elementwise losses, the broadcast shape of ``logits`` and ``labels``, in
    the logits' dtype (as optax). The labels' gradient keeps their dtype and
    is computed in float32 for 16-bit inputs.

  Edge cases: exact for logits of any magnitude, :math:`\pm\infty`
  included: :math:`z = +\infty` with :math:`y = 1` costs 0 (optax gives NaN).

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> loss = jaxsmx.sigmoid_binary_cross_entropy(
    ...     jnp.array([0.0, jnp.inf]), jnp.array([1.0, 1.0]))
    >>> print(np.round(np.asarray(loss), 4))
    [0.6931 0.    ]

  Notes:
    Gradient: :math:`\partial L/\partial z = \sigma(z) - y`,
    :math:`\partial L/\partial y = -z`. Residuals: the inputs.
  """
  fn = "sigmoid_binary_cross_entropy"
  logits = _checks.as_inexact(logits, "logits", fn)
  labels = _checks.as_array(labels)
  if _checks.dtype_kind(labels.dtype) not in ("bool", "integer", "floating"):
    raise TypeError(
      f"{fn}: labels must be real numbers in [0, 1] (floating, integer or"
      f" boolean); got {labels.dtype} with shape {labels.shape}."
    )
  _checks.broadcast_pair(logits, labels, "logits", "labels", fn)
  return _sigmoid_bce_jit(logits, labels)


def _sigmoid_bce_prepared(logits, labels):
  """Broadcasts as optax does; the loss comes back in the logits' dtype."""
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(logits.dtype)  # integer or boolean labels
  shape = jnp.broadcast_shapes(logits.shape, labels.shape)
  logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
  return _sigmoid_bce(*same_varying_axes(logits, labels))


@jax.custom_vjp
def _sigmoid_bce(logits, labels):
  return _sigmoid_bce_fwd(logits, labels)[0]


def _sigmoid_bce_fwd(logits, labels):
  z, y = upcast(logits), upcast(labels)
  # y log sigma(z) is 0 for y = 0, whatever z: the log's argument is replaced
  # first (double where), so that 0 * -inf is never formed
  pos = jnp.where(y == 0, 0.0, -y * jax.nn.log_sigmoid(jnp.where(y == 0, 0.0, z)))
  neg = jnp.where(
    y == 1, 0.0, -(1.0 - y) * jax.nn.log_sigmoid(jnp.where(y == 1, 0.0, -z))
  )
  # optax's dtype: it converts the labels to the logits' dtype
  out = (pos + neg).astype(logits.dtype)
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
_sigmoid_bce_jit = jax.jit(_sigmoid_bce_prepared)
