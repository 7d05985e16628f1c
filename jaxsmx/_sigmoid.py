r"""Sigmoid losses: independent binary labels against the sigmoid of logits,
elementwise (binary cross-entropy, with torch's ``pos_weight``, and focal
loss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsmx import _checks
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  in_compute_dtype,
  log_of_sum,
  same_varying_axes,
  times_cotangent,
  upcast,
)


@array_inputs
def sigmoid_binary_cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  pos_weight: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Binary cross-entropy of a sigmoid output, elementwise.

  .. math::
    L(z, y) = -w_+ y \log\sigma(z) - (1 - y)\log(1 - \sigma(z)),
    \qquad \sigma(z) = \frac{1}{1 + e^{-z}}

  with :math:`w_+ = 1` unless ``pos_weight`` is given. A drop-in replacement
  for :func:`optax.losses.sigmoid_binary_cross_entropy`, and, with
  ``pos_weight``, for ``torch.nn.functional.binary_cross_entropy_with_logits(
  ..., pos_weight=..., reduction='none')``. Its gradient :math:`\sigma(z) - y`
  is the article's remark: unlike squared error, whose gradient
  :math:`(\sigma - y)\sigma(1-\sigma)` vanishes as the sigmoid saturates, the
  cross-entropy gradient stays proportional to the error, so learning does
  not slow down.

  Args:
    logits: any shape, floating.
    labels: targets in [0, 1], broadcasting against ``logits`` as in optax
      (a scalar such as ``1.0`` for a GAN loss, or ``[C]`` against
      ``[..., C]``); integer or boolean labels are converted to the logits'
      dtype.
    pos_weight: keyword-only weight :math:`w_+ \ge 0` of the positive term,
      as torch's: ``[C]`` weighs each of ``C`` independent labels (the
      number of negatives over the number of positives is the usual choice).
      It broadcasts against the broadcast shape of ``logits`` and ``labels``
      without enlarging it; floating (its gradient keeps its dtype), or
      integer (converted to the logits' dtype).

  Returns:
    Elementwise losses, the broadcast shape of ``logits`` and ``labels``, in
    the logits' dtype (as optax). The labels' gradient keeps their dtype and
    is computed in float32 for 16-bit inputs; so does that of ``pos_weight``.

  Edge cases: exact for logits of any magnitude, :math:`\pm\infty`
  included: :math:`z = +\infty` with :math:`y = 1` costs 0 (optax gives NaN).
  A zero ``pos_weight`` drops the positive term, also at :math:`z = -\infty`.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> loss = jaxsmx.sigmoid_binary_cross_entropy(
    ...     jnp.array([0.0, jnp.inf]), jnp.array([1.0, 1.0]))
    >>> print(np.round(np.asarray(loss), 4))
    [0.6931 0.    ]
    >>> loss = jaxsmx.sigmoid_binary_cross_entropy(
    ...     jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]),
    ...     pos_weight=jnp.array(3.0))
    >>> print(np.round(np.asarray(loss), 4))
    [2.0794 0.6931]

  Notes:
    Gradient: :math:`\partial L/\partial z = (1 - y)\sigma(z) - w_+ y
    \sigma(-z)` (:math:`\sigma(z) - y` for :math:`w_+ = 1`),
    :math:`\partial L/\partial y = -w_+\log\sigma(z) + \log\sigma(-z)`
    (:math:`-z`), :math:`\partial L/\partial w_+ = -y\log\sigma(z)`.
    Residuals: the inputs.
  """
  fn = "sigmoid_binary_cross_entropy"
  logits = _checks.as_inexact(logits, "logits", fn)
  labels = _real_labels(labels, fn)
  shape = _checks.broadcast_pair(logits, labels, "logits", "labels", fn)
  if pos_weight is not None:
    pos_weight = _real_option(pos_weight, "pos_weight", fn)
    _fits(pos_weight, shape, "pos_weight", fn)
  return _sigmoid_bce_jit(logits, labels, pos_weight)


def _real_labels(labels, fn) -> jax.Array:
  labels = _checks.as_array(labels)
  if _checks.dtype_kind(labels.dtype) not in ("bool", "integer", "floating"):
    raise TypeError(
      f"{fn}: labels must be real numbers in [0, 1] (floating, integer or"
      f" boolean); got {labels.dtype} with shape {labels.shape}."
    )
  return labels


def _real_option(x, name, fn) -> jax.Array:
  """A floating or integer array option (pos_weight, alpha, gamma)."""
  x = _checks.as_array(x)
  if _checks.dtype_kind(x.dtype) not in ("integer", "floating"):
    raise TypeError(
      f"{fn}: {name} must be a real number or a real array (floating or"
      f" integer); got {x.dtype} with shape {x.shape}. Pass for example"
      f" {name}=jnp.asarray(..., jnp.float32)."
    )
  return x


def _fits(x: jax.Array, shape: tuple[int, ...], name: str, fn: str) -> None:
  """`x` broadcasts to `shape` without enlarging it."""
  try:
    ok = _checks.broadcast_shapes(tuple(x.shape), tuple(shape)) == tuple(shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"{fn}: {name} must broadcast to the loss's shape {tuple(shape)} (the"
      f" broadcast shape of logits and labels, NumPy rules) without enlarging"
      f" it; got {name} {tuple(x.shape)}. For one weight per label of"
      f" [..., C] logits pass shape ({shape[-1] if shape else 1},)."
    )


def _sigmoid_bce_prepared(logits, labels, pos_weight):
  """Broadcasts as optax does; the loss comes back in the logits' dtype.

  An integer pos_weight is converted to the logits' dtype; a floating one
  keeps its own, like the labels (the rule computes in the widest).
  """
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(logits.dtype)  # integer or boolean labels
  shape = jnp.broadcast_shapes(logits.shape, labels.shape)
  logits, labels = jnp.broadcast_to(logits, shape), jnp.broadcast_to(labels, shape)
  if pos_weight is not None:
    if not jnp.issubdtype(pos_weight.dtype, jnp.floating):
      pos_weight = pos_weight.astype(logits.dtype)
    pos_weight = jnp.broadcast_to(pos_weight, shape)
  return _sigmoid_bce(*same_varying_axes(logits, labels, pos_weight))


def _bce_terms(z, y_pos, y_neg):
  """-y_pos log sigma(z) - y_neg log sigma(-z); a term of weight 0 is 0.

  A term of weight 0 costs 0 whatever z: the log's argument is replaced
  first (double where), so that 0 * -inf is never formed.
  """
  zp, zn = y_pos == 0, y_neg == 0
  pos = jnp.where(zp, 0.0, -y_pos * jax.nn.log_sigmoid(jnp.where(zp, 0.0, z)))
  neg = jnp.where(zn, 0.0, -y_neg * jax.nn.log_sigmoid(jnp.where(zn, 0.0, -z)))
  return pos + neg


@jax.custom_vjp
def _sigmoid_bce(logits, labels, pos_weight):
  return _sigmoid_bce_fwd(logits, labels, pos_weight)[0]


def _sigmoid_bce_fwd(logits, labels, pos_weight):
  if pos_weight is None:
    z, y = in_compute_dtype(logits, labels)
    loss = _bce_terms(z, y, 1.0 - y)
  else:
    z, y, w = in_compute_dtype(logits, labels, pos_weight)
    loss = _bce_terms(z, w * y, 1.0 - y)
  # optax's dtype: it converts the labels to the logits' dtype
  out = loss.astype(logits.dtype)
  # saves the inputs
  return out, (logits, labels, pos_weight)


def _sigmoid_bce_bwd(res, g):
  logits, labels, pos_weight = res
  if pos_weight is None:
    # d/dz: sigmoid(z) - y;  d/dy: -z
    z, y, g = in_compute_dtype(logits, labels, g)
    dz = g * (jax.nn.sigmoid(z) - y)
    dy = times_cotangent(g, -z)
    return dz.astype(logits.dtype), dy.astype(labels.dtype), None
  # d/dz: (1 - y) sigma(z) - w y sigma(-z);  d/dy: -w log sigma(z) +
  # log sigma(-z);  d/dw: -y log sigma(z) (a zero factor is 0 at z = -inf)
  z, y, w, g = in_compute_dtype(logits, labels, pos_weight, g)
  dz = g * ((1.0 - y) * jax.nn.sigmoid(z) - w * y * jax.nn.sigmoid(-z))
  dy = times_cotangent(g, _bce_terms(z, w, 0.0) - _bce_terms(z, 0.0, 1.0))
  dw = times_cotangent(g, _bce_terms(z, y, 0.0))
  return (
    dz.astype(logits.dtype),
    dy.astype(labels.dtype),
    dw.astype(pos_weight.dtype),
  )


_sigmoid_bce.defvjp(_sigmoid_bce_fwd, _sigmoid_bce_bwd)
_sigmoid_bce_jit = jax.jit(_sigmoid_bce_prepared)


@array_inputs
def sigmoid_focal_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  alpha: jax.typing.ArrayLike | None = None,
  gamma: jax.typing.ArrayLike = 2.0,
) -> jax.Array:
  r"""Focal loss: binary cross-entropy scaled down where the model is right.

  .. math::
    L(z, y) = \alpha_t\,(1 - p_t)^\gamma\,
      \big(-y\log\sigma(z) - (1 - y)\log(1 - \sigma(z))\big),

  .. math::
    1 - p_t = (1 - y)\,\sigma(z) + y\,(1 - \sigma(z)), \qquad
    \alpha_t = \alpha y + (1 - \alpha)(1 - y)

  (:math:`\alpha_t = 1` without ``alpha``). For a hard label,
  :math:`p_t` is the probability given to the true class, and the factor
  :math:`(1 - p_t)^\gamma` down-weights the easy examples. A drop-in
  replacement for :func:`optax.losses.sigmoid_focal_loss` (soft labels
  included), with a closed-form gradient.

  Args:
    logits: any shape, floating.
    labels: targets in [0, 1], broadcasting against ``logits``; converted to
      the logits' dtype, as in optax.
    alpha: keyword-only weight :math:`\alpha \in [0, 1]` of the positive
      term, or ``None`` for no weighting; a number or an array broadcasting
      against the loss.
    gamma: keyword-only focusing exponent :math:`\gamma \ge 0` (default 2); a
      number or an array broadcasting against the loss. ``gamma=0`` gives
      the (``alpha``-weighted) binary cross-entropy.

  Returns:
    Elementwise losses, the broadcast shape of all the arguments, in the
    logits' dtype. ``alpha`` and ``gamma`` are converted to the logits'
    dtype; every argument's gradient comes back in its own dtype.

  Edge cases: value and gradients are finite wherever their limits are, for
  logits of any magnitude, :math:`\pm\infty` included, and for every
  :math:`\gamma \ge 0`, also :math:`0 < \gamma < 1`, where the derivative of
  :math:`(1 - p_t)^\gamma` alone is unbounded as :math:`p_t \to 1`: an
  example at :math:`z = +\infty` with label 1 costs 0 with gradient 0 (optax
  gives NaN for its gradient at any :math:`\gamma`, and for its value at
  :math:`\gamma = 0`). A soft label at an infinite logit costs
  :math:`+\infty`.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxsmx
    >>> loss = jaxsmx.sigmoid_focal_loss(
    ...     jnp.array([0.5, 2.0, jnp.inf]), jnp.array([1.0, 0.0, 1.0]),
    ...     alpha=0.25)
    >>> print(np.round(np.asarray(loss), 4))
    [0.0169 1.2376 0.    ]

  Notes:
    With :math:`u = 1 - p_t`, :math:`c` the cross-entropy and
    :math:`r = \sigma(z)\sigma(-z)/u`:
    :math:`\partial L/\partial z = \alpha_t u^\gamma\big((1-y)\sigma(z) -
    y\sigma(-z) + \gamma (1 - 2y)\,c\,r\big)`,
    :math:`\partial L/\partial y = \alpha_t u^\gamma\big(-z + \gamma
    (\sigma(-z) - \sigma(z))\,c/u\big) + (2\alpha - 1)\,c\,u^\gamma`,
    :math:`\partial L/\partial\alpha = (2y - 1)\,c\,u^\gamma`,
    :math:`\partial L/\partial\gamma = L\log u`. The power
    :math:`u^{\gamma-1}` never appears alone: :math:`r` and :math:`c/u` are
    bounded (by 1, and by :math:`\max(1, |z|) + 1`), so the gradient stays
    finite as :math:`u \to 0`. The elementwise gradients are formed in the
    forward pass and saved (under :func:`jax.jit` an unused one is never
    computed); the backward pass is a multiply.

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, 2017.
  """
  fn = "sigmoid_focal_loss"
  logits = _checks.as_inexact(logits, "logits", fn)
  labels = _real_labels(labels, fn)
  gamma = _real_option(gamma, "gamma", fn)
  if alpha is not None:
    alpha = _real_option(alpha, "alpha", fn)
  present = {"logits": logits, "labels": labels, "alpha": alpha, "gamma": gamma}
  shapes = {k: tuple(v.shape) for k, v in present.items() if v is not None}
  try:
    _checks.broadcast_shapes(*shapes.values())
  except ValueError:
    given = ", ".join(f"{k} {v}" for k, v in shapes.items())
    raise ValueError(
      f"{fn}: the arguments must broadcast against each other (NumPy rules);"
      f" got {given}. Add the missing axes with jnp.expand_dims, or reshape."
    ) from None
  return _focal_jit(logits, labels, alpha, gamma)


def _focal_prepared(logits, labels, alpha, gamma):
  """Everything broadcast to one shape, in the logits' dtype (as optax
  converts its labels); each gradient comes back through the conversion."""
  arrays = [x for x in (logits, labels, alpha, gamma) if x is not None]
  shape = jnp.broadcast_shapes(*(x.shape for x in arrays))

  def prep(x):
    return None if x is None else jnp.broadcast_to(x.astype(logits.dtype), shape)

  args = same_varying_axes(prep(logits), prep(labels), prep(alpha), prep(gamma))
  return _focal(*args)


@jax.custom_vjp
def _focal(logits, labels, alpha, gamma):
  return _focal_fwd(logits, labels, alpha, gamma)[0]


def _times(a, b):
  """a * b, but 0 where a is 0 (b replaced first, so 0 * inf is never formed):
  a zero weight drops its term."""
  return a * jnp.where(a == 0, 0.0, b)


def _softplus_over_sigmoid(x):
  """log(1 + e^x) / sigma(x), stably: x + ... for large x, 1 for x -> -inf.

  With t = e^{-|x|}: (x + log1p(t)) (1 + t) for x >= 0, and
  (log1p(t) / t) (1 + t) for x < 0, log1p(t) / t by its series where t is
  small, so that no derivative divides by t^2 (which underflows).
  """
  t = jnp.exp(-jnp.abs(x))
  small = t < 1e-4
  ts = jnp.where(small, 1.0, t)
  series = 1.0 - t * (0.5 - t * (1.0 / 3.0 - t * 0.25))
  h = jnp.where(small, series, jnp.log1p(ts) / ts)
  nonneg = x >= 0
  return jnp.where(nonneg, jnp.where(nonneg, x, 0.0) + jnp.log1p(t), h) * (1.0 + t)


def _focal_parts(z, y, gamma):
  """(c, u^gamma, log u, c r, c / u, p, q) of the focal loss, stably.

  u = 1 - p_t = (1 - y) sigma(z) + y sigma(-z), r = sigma(z) sigma(-z) / u.
  For a hard label, u is a sigmoid itself: log u is the log-sigmoid (exact
  for |z| beyond the float range of u), r is the other sigmoid and c / u is
  softplus over sigmoid, each formed without a division by u (whose
  derivative would divide by u^2, which underflows). A soft label y keeps u
  above min(y, 1 - y) / 2 and takes the plain quotients.
  """
  lp, lq = jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
  p, q = jnp.exp(lp), jnp.exp(lq)
  c = _bce_terms(z, y, 1.0 - y)
  u = (1.0 - y) * p + y * q
  one, zero = y == 1, y == 0
  soft = ~(one | zero) & (u > 0)
  safe_u = jnp.where(soft, u, 1.0)
  log_u = jnp.where(one, lq, jnp.where(zero, lp, log_of_sum(jnp.where(soft, u, 0.0))))
  # u^gamma, with 0^0 = 1: gamma * log u is not formed at gamma = 0
  pow_u = jnp.exp(gamma * jnp.where(gamma == 0, 0.0, log_u))
  r = jnp.where(one, p, jnp.where(zero, q, p * q / safe_u))
  c_u = jnp.where(
    one,
    _softplus_over_sigmoid(-z),
    jnp.where(zero, _softplus_over_sigmoid(z), c / safe_u),
  )
  # c r -> 0 where r = 0 (an infinite logit): r decays exponentially, c
  # grows linearly
  c_r = _times(r, c)
  return c, pow_u, log_u, c_r, c_u, p, q


def _focal_fwd(logits, labels, alpha, gamma):
  z, y, gm = upcast(logits), upcast(labels), upcast(gamma)
  c, pow_u, log_u, c_r, c_u, p, q = _focal_parts(z, y, gm)
  cw = _times(pow_u, c)  # c u^g
  if alpha is None:
    a_t = jnp.ones_like(z)
  else:
    a = upcast(alpha)
    a_t = a * y + (1.0 - a) * (1.0 - y)
  loss = _times(a_t, cw)
  # d/dz: a_t u^g ((1 - y) p - y q + g (1 - 2y) c r)
  dz = a_t * pow_u * ((1.0 - y) * p - y * q + gm * ((1.0 - y) - y) * c_r)
  # d/dy: a_t u^g (-z + g (q - p) c/u) [+ (2 alpha - 1) c u^g]; each factor
  # that is 0 drops its term (-z u^g at z = +-inf with its hard label)
  dy = _times(a_t, _times(pow_u, -z) + _times(gm * (q - p), _times(pow_u, c_u)))
  # d/dgamma: L log u; 0 where L = 0 (u^g log u -> 0) or u = 1 (then L does
  # not depend on gamma, also where L is infinite)
  either = (loss == 0) | (log_u == 0)
  dgamma = jnp.where(either, 0.0, jnp.where(either, 1.0, loss) * log_u)
  dalpha = None
  if alpha is not None:
    # d/dalpha: (2y - 1) c u^g
    dy = dy + _times(2.0 * a - 1.0, cw)
    dalpha = _times(y - (1.0 - y), cw).astype(alpha.dtype)
  # saves the four gradients, each in its input's dtype
  dtype = logits.dtype  # every input is in the logits' dtype here
  res = (dz.astype(dtype), dy.astype(dtype), dalpha, dgamma.astype(dtype))
  return loss.astype(dtype), res


def _focal_bwd(res, g):
  g = upcast(g)
  return tuple(
    None if d is None else times_cotangent(g, upcast(d)).astype(d.dtype) for d in res
  )


_focal.defvjp(_focal_fwd, _focal_bwd)
_focal_jit = jax.jit(_focal_prepared)
