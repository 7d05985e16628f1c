r"""Softmax, log-softmax and logsumexp with closed-form reverse-mode rules.

Every function here reduces over one or more class axes. They share one rule
for the edges: masked entries count as :math:`-\infty`; a slice with no finite
mass (all :math:`-\infty`, or fully masked) has logsumexp :math:`-\infty` and
all its probabilities :math:`0`; a :math:`+\infty` or NaN anywhere in a slice
makes that whole slice NaN, except in logsumexp, where :math:`+\infty` gives
:math:`+\infty` (as in jax.nn and scipy).

Each public function is one compiled call (``jax.jit`` around the checked
arguments), as jax.nn's are, and reduces a tuple ``axis`` as one flattened
axis, so that it gives to the last bit what the data moved to one axis gives.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsmx import _checks
from jaxsmx._checks import Axis
from jaxsmx._inputs import array_inputs
from jaxsmx._numerics import (
  as_array,
  batch_result,
  broadcast_shape,
  exp_normalizer,
  flat_inputs,
  from_last,
  log_of_sum,
  log_probs,
  masked,
  ratio,
  static_axis,
  times_cotangent,
)

# ---------------------------------------------------------------------------
# softmax


@array_inputs
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
    where: boolean mask broadcastable against ``x`` (it may also broadcast
      ``x`` up, as in jax.nn); masked entries take no part and get
      probability 0.

  Returns:
    Probabilities with the broadcast shape of ``x`` and ``where``, in the
    dtype of ``x``.

  Edge cases: a :math:`-\infty` logit gets probability 0. A slice that is all
  :math:`-\infty` or fully masked gives all zeros (``jax.nn.softmax`` gives
  NaN). A :math:`+\infty` or NaN logit makes its slice NaN.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> with jnp.printoptions(precision=4):
    ...   print(jaxsmx.softmax(jnp.array([3.0, 1.0, -3.0])))
    [0.8789 0.1189 0.0022]

  Notes:
    Gradient: :math:`\bar z = a \odot (g - \langle g, a\rangle)`; the
    residual is the output :math:`a` itself, in float32 for 16-bit logits.
  """
  return _softmax_jit(as_array(x), static_axis(axis, "softmax"), as_array(where))


def _prepare(fn, x, axis, where):
  """The logits promoted, broadcast with the mask (as jax.nn does: the mask
  may also broadcast x up), flattened to one class axis in the compute dtype.

  Returns (flat logits, flat mask, finish), where finish restores a [..., C]
  result to the broadcast shape, in the logits' dtype.
  """
  x = _checks.as_inexact(x, "x", fn)
  mask = _checks.as_mask(where, np.shape(where), (), fn, per_slice=False)
  shape = broadcast_shape(fn, x=x, where=mask)
  axes = _checks.canonical_axes(axis, len(shape), fn)
  z, m = flat_inputs(shape, axes, _checks.compute_dtype(x.dtype), x, mask)

  def finish(y):
    return from_last(y, shape, axes).astype(x.dtype)

  return z, m, finish


def _softmax_prepared(x, axis, where):
  z, mask, finish = _prepare("softmax", x, axis, where)
  return finish(_softmax(z, mask))


_softmax_jit = jax.jit(_softmax_prepared, static_argnums=(1,))


@jax.custom_vjp
def _softmax(z, where):
  return _softmax_fwd(z, where)[0]


def _softmax_fwd(z, where):
  e, s, _ = exp_normalizer(masked(z, where), (z.ndim - 1,))
  a = ratio(e, s)
  # saves the output a
  return a, a


def _softmax_bwd(a, g):
  # d/dz: a * (g - sum(g * a))
  return a * (g - jnp.sum(g * a, -1, keepdims=True)), None


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


# ---------------------------------------------------------------------------
# log_softmax


@array_inputs
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
    where: boolean mask broadcastable against ``x``, as for :func:`softmax`;
      masked entries give :math:`-\infty`.

  Returns:
    Log-probabilities with the broadcast shape of ``x`` and ``where``, in the
    dtype of ``x``.

  Edge cases: logits of magnitude up to the dtype's maximum are exact. A
  :math:`-\infty` logit gives :math:`-\infty`; a slice that is all
  :math:`-\infty` or fully masked gives :math:`-\infty` throughout. A
  :math:`+\infty` or NaN logit makes its slice NaN.

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jaxsmx.log_softmax(jnp.array([1000.0, 0.0])).tolist())
    [0.0, -1000.0]

  Notes:
    Gradient: :math:`\bar z = g - \mathrm{softmax}(z) \sum_k g_k`; the
    residual is softmax(z), which the forward pass forms anyway from the one
    exponential per element; masked entries get 0.
  """
  return _log_softmax_jit(
    as_array(x), static_axis(axis, "log_softmax"), as_array(where)
  )


def _log_softmax_prepared(x, axis, where):
  z, mask, finish = _prepare("log_softmax", x, axis, where)
  return finish(_log_softmax(z, mask))


_log_softmax_jit = jax.jit(_log_softmax_prepared, static_argnums=(1,))


@jax.custom_vjp
def _log_softmax(z, where):
  return _log_softmax_fwd(z, where)[0]


def _log_softmax_fwd(z, where):
  z = masked(z, where)
  e, s, shift = exp_normalizer(z, (z.ndim - 1,))
  out = log_probs(z, shift, log_of_sum(s))
  # saves softmax(z), e / s, and the mask: the bwd needs no exp
  return out, (ratio(e, s), where)


def _log_softmax_bwd(res, g):
  # d/dz: g - softmax(z) * sum(g)
  a, where = res
  if where is not None:
    g = jnp.where(where, g, 0.0)
  return g - a * jnp.sum(g, -1, keepdims=True), None


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


# ---------------------------------------------------------------------------
# logsumexp


@array_inputs
def logsumexp(
  a: jax.typing.ArrayLike,
  axis: Axis = None,
  b: jax.typing.ArrayLike | None = None,
  keepdims: bool = False,
  return_sign: bool = False,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""Log of the sum of (scaled) exponentials, computed without overflow.

  .. math::
    \mathrm{lse}(a, b) = \log \Big|\sum_k b_k e^{a_k}\Big|
      = m + \log \Big|\sum_k b_k e^{a_k - m}\Big|,\quad m = \max_k a_k

  A drop-in replacement for :func:`jax.nn.logsumexp` (and
  :func:`scipy.special.logsumexp`), with the same arguments in the same
  order.

  Args:
    a: input array. Integers and booleans are promoted to a floating dtype.
    axis: axis or axes to reduce; ``None`` (the default) reduces all axes,
      ``()`` none.
    b: scaling factors :math:`b_k`, broadcastable against ``a`` (the result
      has the broadcast shape, reduced); may be negative. ``b_k = 0`` leaves
      :math:`a_k` out of the sum, whatever its value.
    keepdims: keep the reduced axes with size 1.
    return_sign: return ``(result, sign)``, where ``result`` is the log of the
      absolute value of the sum and ``sign`` its sign (-1, 0 or 1). Without
      it, a negative sum gives NaN.
    where: boolean mask broadcastable against ``a``; masked entries are left
      out of the sum.

  Returns:
    The broadcast shape of ``a``, ``b`` and ``where`` without the reduced
    axes (kept as 1 with ``keepdims``), in the promoted dtype of ``a`` and
    ``b``; with ``return_sign``, a pair of such arrays.

  Edge cases: a sum of 0 (an empty, all :math:`-\infty` or fully masked
  slice, or all :math:`b_k = 0`) gives :math:`-\infty` with gradient 0
  (``jax.nn.logsumexp`` gives a NaN gradient). A :math:`+\infty` entry gives
  :math:`+\infty`, and its gradient is the limit of the softmax weights (1 at
  that entry, 0 elsewhere; ``jax.nn`` gives NaN). A NaN entry makes its slice
  NaN. The gradient with respect to :math:`b_k` is
  :math:`\mathrm{sign}\cdot e^{a_k - \mathrm{lse}}` also where
  :math:`b_k = 0` (``jax.nn`` gives 0 there).

  Example:
    >>> import jax.numpy as jnp, jaxsmx
    >>> print(jaxsmx.logsumexp(jnp.array([1e30, 1e30])))
    1e+30
    >>> value, sign = jaxsmx.logsumexp(
    ...     jnp.array([0.0, 0.0]), b=jnp.array([1.0, -2.0]), return_sign=True)
    >>> print(value, sign)
    0.0 -1.0

  Notes:
    Gradients: with :math:`S = \sum_k b_k e^{a_k - m}` and
    :math:`w_k = e^{a_k - m} / S`, :math:`\bar a_k = g\, b_k w_k` and
    :math:`\bar b_k = g\, w_k`; the sign has no gradient. The residuals are
    the (masked) input, the scaling factors and, per slice, :math:`m` and
    :math:`S`; the backward pass recomputes :math:`e^{a_k - m}`. 16-bit inputs
    are computed in float32, and each gradient is rounded once, to its
    input's dtype. A tuple ``axis`` is reduced as one flattened axis.
  """
  fn = "logsumexp"
  return _logsumexp_jit(
    as_array(a),
    static_axis(axis, fn),
    as_array(b),
    bool(_checks.concrete(keepdims, "keepdims", fn)),
    bool(_checks.concrete(return_sign, "return_sign", fn)),
    where,
  )


def _logsumexp_prepared(a, axis, b, keepdims, return_sign, where):
  fn = "logsumexp"
  a = jnp.asarray(a)
  b = None if b is None else jnp.asarray(b)
  dtype = _lse_dtype(a, b)
  # integers and booleans take the promoted dtype (as in jax.nn); complex
  # inputs are refused
  a, b = _promoted(a, "a", dtype), _promoted(b, "b", dtype)
  mask = _checks.as_mask(where, np.shape(where), (), fn, per_slice=False)
  shape = broadcast_shape(fn, a=a, b=b, where=mask)
  axes = () if axis == () else _checks.canonical_axes(axis, len(shape), fn)
  compute = _checks.compute_dtype(dtype)

  a_, b_, m_ = flat_inputs(shape, axes, compute, a, b, mask)
  # jax types a custom_vjp's call as returning object
  value, sign = _lse(a_, b_, m_, b is not None and not return_sign)  # pyright: ignore[reportGeneralTypeIssues]
  value = batch_result(value, shape, axes, keepdims).astype(dtype)
  if return_sign:
    return value, batch_result(sign, shape, axes, keepdims).astype(dtype)
  return value


_logsumexp_jit = jax.jit(_logsumexp_prepared, static_argnums=(1, 3, 4))


def _promoted(x, name, dtype):
  """Integers and booleans in `dtype`; complex inputs are refused."""
  if x is None:
    return None
  x = _checks.as_inexact(x, name, "logsumexp")
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)


def _lse_dtype(a, b):
  """The result dtype: a and b promoted together, then made inexact by
  jax.nn's rule (int32 gives float32, also under x64)."""
  dtype = jnp.result_type(a) if b is None else jnp.result_type(a, b)
  return _checks.inexact_dtype(dtype)


def _lse_stats(a, b, where):
  """(shift m, signed sum S of b e^{a - m}) per slice, keepdims, over the
  entries that count: kept by `where`, with b != 0."""
  live = where
  if b is not None:
    live = (b != 0) if live is None else live & (b != 0)
  z = masked(a, live)
  shift = jnp.max(z, -1, keepdims=True, initial=jnp.finfo(a.dtype).min)
  e = _exp_from(z, shift)
  be = e if b is None else jnp.where(live, b * e, 0.0)
  return shift, jnp.sum(be, -1, keepdims=True)


def _exp_from(z, shift):
  """exp(z - shift), with exp(+inf - +inf) taken as 1 (a +inf entry at the
  maximum), and no NaN formed on the way.

  A slice whose shift is +inf is shifted by the largest finite float instead
  and capped at 0: its +inf entries give 1 and its finite ones 0. The fix-up
  is per slice; elementwise there is only a subtract, a min and the exp, which
  XLA fuses into the reduction that follows (an elementwise select would be
  materialised there).
  """
  inf = shift == jnp.inf
  finite_shift = jnp.where(inf, jnp.finfo(z.dtype).max, shift)
  cap = jnp.where(inf, 0.0, jnp.inf)
  return jnp.exp(jnp.minimum(z - finite_shift, cap))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lse(a, b, where, nan_if_negative):
  return _lse_fwd(a, b, where, nan_if_negative)[0]


def _lse_fwd(a, b, where, nan_if_negative):
  shift, s = _lse_stats(a, b, where)
  value = shift + log_of_sum(jnp.abs(s))
  if nan_if_negative:
    value = value + _nan_where_negative(s)
  # saves the input, b, the mask, and per slice the shift and the signed sum
  # (not the masked input: its -inf would be a residual, which
  # jax.debug_infs checks in an eager call)
  return (value, jnp.sign(s)), (a, b, where, shift, s)


def _lse_bwd(nan_if_negative, res, cts):
  # d/da: g * b * w;  d/db: g * w, with w = exp(a - shift) / S (0 if S = 0)
  a, b, where, shift, s = res
  z = masked(a, where)
  g = cts[0]
  empty = s == 0.0
  w = jnp.where(empty, 0.0, _exp_from(z, shift) / jnp.where(empty, 1.0, s))
  if nan_if_negative:
    w = w + _nan_where_negative(s)
  if b is None:
    return g * w, None, None
  da = g * jnp.where(b == 0, 0.0, b * jnp.where(b == 0, 0.0, w))
  return da, times_cotangent(g, w), None


_lse.defvjp(_lse_fwd, _lse_bwd)


def _nan_where_negative(s):
  """NaN where s < 0, else 0, as log(-1): no NaN constant is formed where the
  sum is not negative (jax.debug_nans checks every primitive op by op)."""
  return jnp.log(jnp.where(s < 0, -1.0, 1.0))
