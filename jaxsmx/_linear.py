r"""Fused linear softmax cross-entropy: the loss of ``x @ w`` without its logits.

Language models end in a projection onto the vocabulary followed by a
cross-entropy. The logits ``x @ w`` are ``N x V``, often gigabytes, and dense
autodiff keeps them and their gradient alive. Here the vocabulary is streamed
in chunks of ``w``'s columns: the forward pass keeps a running log-normaliser
per example (an online logsumexp), and the backward pass recomputes each
chunk's logits from ``x`` and ``w`` and accumulates ``dx``, ``dw`` and
``dbias``. No array of shape ``N x V`` exists in either pass.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, cast

import jax
import jax.core
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsmx import _checks
from jaxsmx._numerics import is_empty

_FN = "linear_softmax_cross_entropy"

# The automatic chunk: an N x chunk float32 block of at most 16 MiB, and at
# most V / 32 columns. Measured on CPU at N=4096, H=512, V=32768: 1024 columns
# (16 MiB) beat 512 and 2048 by about 4%; fewer, larger chunks also mean fewer
# passes accumulating dx. V / 32 keeps the two or three blocks alive at once
# below a tenth of the N x V logits.
_BLOCK_BYTES = 16 * 2**20
_LANE = 128
# Logits of at most 4 MiB (float32) are one chunk: no loop, so small models
# pay what the dense loss costs. A symbolic N (jax.export) is taken as 4096.
_SMALL_BYTES = 4 * 2**20
_SYMBOLIC_ROWS = 4096


def linear_softmax_cross_entropy(
  x: jax.typing.ArrayLike,
  w: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  bias: jax.typing.ArrayLike | None = None,
  where: jax.typing.ArrayLike | None = None,
  ignore_index: int | None = None,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
  softcap: float | None = None,
  chunk_size: int | None = None,
  precision: lax.PrecisionLike = None,
  reduction: str = "none",
  weights: jax.typing.ArrayLike | None = None,
  check_labels: bool = False,
) -> jax.Array:
  r"""Softmax cross-entropy of the logits ``x @ w + bias``, never materialised.

  With :math:`z = \mathrm{cap}(x W + b)`, the optional soft cap
  :math:`\mathrm{cap}(u) = c \tanh(u / c)`, the log-normaliser
  :math:`\ell = \log\sum_{k\,:\,m_k} e^{z_k}` over the unmasked classes, and
  :math:`C` the number of unmasked classes, the loss of an example with label
  :math:`t` is

  .. math::
    L = (1-\alpha)(\ell - z_t) + \alpha\Big(\ell - \frac{1}{C}\sum_{k\,:\,m_k}
      z_k\Big) + \lambda\,\ell^2 .

  That is exactly ``softmax_cross_entropy_with_integer_labels(cap(x @ w + b),
  labels, where=where[None], label_smoothing=alpha, ignore_index=...)`` plus
  the z-loss :math:`\lambda \ell^2` (PaLM), with every rule of that function,
  but computed chunk by chunk over the vocabulary.

  Args:
    x: ``[..., H]`` features, floating.
    w: ``[H, V]`` projection onto the vocabulary, floating: the logits are
      ``x @ w``.
    labels: ``[...]`` integer classes in ``[0, V)``, ``x.shape[:-1]``.
    bias: keyword-only ``[V]`` bias added to the logits, or None.
    where: keyword-only ``[V]`` boolean mask over the vocabulary. Masking
      means slicing the classes: masked classes get probability 0, and an
      example whose label is masked is dropped (loss 0, gradient 0).
    ignore_index: keyword-only label value (for example -100) whose examples
      get loss 0 and gradient 0.
    label_smoothing: keyword-only :math:`\alpha \in [0, 1]`, spread over the
      unmasked classes.
    z_loss: keyword-only :math:`\lambda \ge 0`, the weight of
      :math:`\ell^2`; 0 for dropped and ignored examples.
    softcap: keyword-only :math:`c > 0` of the logit cap
      :math:`c\tanh(u/c)` (Gemma 2), applied to ``x @ w + bias`` before
      masking; None turns it off.
    chunk_size: keyword-only number of vocabulary columns per step, or None
      to choose one from N and V (see Notes).
    precision: keyword-only precision of the matmuls, as for
      :func:`jax.lax.dot_general`.
    reduction: keyword-only ``"none"`` (the default: one loss per example),
      ``"sum"`` or ``"mean"``. ``"sum"`` gives :math:`\sum_n \omega_n L_n`;
      ``"mean"`` divides that by :math:`\sum_n \omega_n` over the examples
      that count, which excludes ignored examples (``ignore_index``) and
      dropped ones (target class masked out), as
      ``torch.nn.functional.cross_entropy`` does with ``ignore_index``. When no
      example counts (all ignored, all weights 0, or every class masked) the
      mean is 0 with gradient 0, where torch gives NaN.
    weights: keyword-only per-example weights :math:`\omega_n` (loss masks,
      token weights), floating, of ``labels``' shape or broadcasting to it;
      None means 1. With ``reduction="none"`` the result is
      :math:`\omega_n L_n`. Differentiable.
    check_labels: keyword-only; ``True`` reports bad labels with
      :func:`jax.experimental.checkify.check`: labels outside ``[0, V)``
      that are not ``ignore_index``, and labels whose class ``where`` masks
      out, with the valid range and the labels in the message. An eager call
      raises :class:`~jax.experimental.checkify.JaxRuntimeError` at once; a
      traced one must be wrapped in
      ``checkify.checkify(f, errors=checkify.user_checks)``. ``False`` (the
      default) adds nothing to the program: no effect, no callback.

  Returns:
    ``[...]``: per-example losses of ``labels``' shape, or a scalar with
    ``reduction="sum"`` or ``"mean"``, in the promoted dtype of ``x``, ``w``
    and ``bias``. 16-bit inputs are computed in float32: the matmuls
    accumulate in float32 and only the result is rounded back.

  Edge cases, as in :func:`softmax_cross_entropy_with_integer_labels`: a
  label outside ``[0, V)`` that is not ``ignore_index`` gives NaN in its loss
  and in its row of ``dx`` (and so in all of ``dw`` and ``dbias``, as dense
  autodiff does, and in a reduced loss); ``check_labels=True`` reports it,
  and a label whose class ``where`` masks out. Labels of any integer dtype
  are read without wrapping (uint8 labels with V=300 included). A fully
  masked vocabulary gives 0 with gradient 0. A :math:`+\infty` or NaN logit
  makes its example NaN. No NaN is formed on the way for finite inputs, so
  ``jax.debug_nans`` and ``checkify.float_checks`` stay quiet.

  Which reduction: when the loss is summed or averaged straight away (language
  model training), pass ``reduction="mean"`` (or ``"sum"``) instead of
  calling ``.mean()`` on the per-example losses. The loss is then one number,
  so the forward pass already forms ``dx``, ``dw`` and ``dbias`` and the
  backward pass only scales them by the scalar cotangent: no pass over the
  vocabulary runs in the backward pass, and its residuals are the gradients
  themselves (``N x H``, ``H x V``) rather than ``x`` and ``w``. Working
  memory: at Gemma 2 (2B) scale (N=8192, H=2304, V=256000, bfloat16)
  XLA:CPU's compiled temp memory is 18 MiB for the loss and 108 MiB for
  ``value_and_grad`` in both modes, against about 8,000 and 18,250 MiB for
  dense autodiff of ``x @ w``; in float32 the reduced mode adds one float32
  ``H x V`` array (see Notes) and runs the three matmuls of dense autodiff
  instead of four. Keep ``reduction="none"`` when the per-example losses are
  needed.

  Sharding: under :func:`jax.jit` with the rows of ``x`` and the columns of
  ``w`` split over mesh axes (data and vocabulary parallel, automatic or
  explicit sharding), each device streams over its own columns. Only
  :math:`O(N)` per-row statistics, the partial ``dx`` (:math:`N H`) and the
  partial ``dw`` cross devices; ``w`` is never gathered. Inside a
  :func:`jax.shard_map`, a reduction sums or averages the rows of each device.

  Example:
    >>> import jax, jax.numpy as jnp, jaxsmx
    >>> x = jnp.array([[1.0, 0.5], [-0.3, 2.0]])
    >>> w = jnp.array([[0.2, -0.4, 1.0], [0.7, 0.1, -0.5]])
    >>> print(jnp.round(
    ...     jaxsmx.linear_softmax_cross_entropy(x, w, jnp.array([0, 1])), 4))
    [0.9662 1.379 ]

  Notes:
    Gradient: with :math:`a = \mathrm{softmax}(z)` and :math:`u = xW + b`,
    :math:`\partial L/\partial z = a(1 + 2\lambda\ell) - (1-\alpha)\,
    \mathrm{onehot}(t) - \frac{\alpha}{C} m` and :math:`\partial L/\partial u
    = \partial L/\partial z \cdot (1 - \tanh^2(u/c))`, then
    :math:`dx = \delta W^\top`, :math:`dW = x^\top \delta`,
    :math:`db = \sum_n \delta_n`. A reduced loss :math:`\sum_n r_n L_n`, with
    :math:`r_n = \omega_n` (sum) or :math:`\omega_n / D` (mean, :math:`D`
    the total counted weight), has the weighted sum of these per-example
    gradients, :math:`\delta \to r \odot \delta`; its weights' gradient is
    :math:`L_n` (sum) or :math:`(L_n - [n \text{ counts}]\,M)/D` (mean).

    Per-example mode: the residuals are ``x``, ``w``, ``bias``, ``labels``,
    ``where`` and two float32 normaliser scalars per example (shift and
    log-norm); the backward pass recomputes the logits chunk by chunk: four
    matmuls of :math:`2NHV` flops against dense autodiff's three. Reduced
    modes save ``dx``, ``dw``, ``dbias`` in their primals' dtypes and form
    them in the forward pass. With 32- or 64-bit ``x`` and ``w`` on one
    device, that pass takes blocks of R rows against all of ``w`` (an
    ``R x V`` float32 block of at most 16 MiB, R <= 256): the logits,
    ``dx`` and ``dw`` are the three matmuls of dense autodiff, and ``dw``
    accumulates over the blocks in one float32 ``H x V`` array, the one
    array of that size it adds. With 16-bit inputs, or with ``w`` split over
    devices, it streams twice over per-device vocabulary chunks instead (the
    normalisers, then the gradient): four matmuls (six with 16-bit inputs,
    see Memory), nothing ``H x V`` beyond ``dw``.

    Chunks: ``chunk_size=None`` takes the largest multiple of 128 with an
    ``N x chunk`` float32 block of at most 16 MiB and at most ``V / 32``
    columns (at least 128), moved down to a multiple of 128 that divides V
    when one lies within a factor 2; all of V (no loop) when the float32
    ``N x V`` logits take at most 4 MiB; a symbolic N (:mod:`jax.export`)
    counts as 4096. For N=4096 and V=32768 that is 1024. A V that the chunk
    does not divide ends with a shorter chunk; ``w`` is never padded.

    Memory: XLA temp memory :math:`O(N \cdot \mathrm{chunk} + N H)` beyond
    the :math:`H V` gradient of ``w``; at N=4096, H=512, V=32768 float32,
    27 MB against dense autodiff's 1074 MB. A 16-bit ``w`` is never copied:
    XLA:CPU has no 16-bit float dynamic slice and would widen (and hoist out
    of the loop) all of ``w``, so its chunks are cut from its bits inside a
    conditional, and a bfloat16 ``x @ w`` runs in bfloat16 with float32
    sums. The backward pass keeps 16-bit ``x`` and ``w`` as they are too
    (XLA:CPU would widen a 16-bit ``x`` for :math:`x^\top\delta`): each
    chunk's float32 :math:`\delta` is split into two 16-bit parts, high and
    low, whose products with ``x`` and ``w`` are exact in float32, so the
    gradient is as accurate as with a float32 :math:`\delta`, for two
    16-bit products in place of one float32 one. ``dx`` is summed in one
    float32 ``N x H`` array, in place, in row blocks of at most 16 MiB.

  References:
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
    arXiv:2411.09009 (2024). Chowdhery et al., "PaLM", arXiv:2204.02311 (z-loss).
    Gemma Team, "Gemma 2", arXiv:2408.00118 (logit soft-capping).
  """
  x = _checks.as_floating(x, "x", _FN)
  w = _checks.as_floating(w, "w", _FN)
  if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
    raise ValueError(
      f"{_FN}: x must be [..., H] and w [H, V], so that the logits are"
      f" x @ w; got x {x.shape} and w {w.shape}. If w is stored as"
      " [V, H] (an embedding table), pass w.T."
    )
  hidden, vocab = w.shape
  batch_shape = x.shape[:-1]
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
      f"{_FN}: labels must have an integer dtype (class indices); got"
      f" {labels.dtype} with shape {labels.shape}. For integer labels stored"
      " as floats use labels.astype(jnp.int32)."
    )
  if labels.shape != batch_shape:
    raise ValueError(
      f"{_FN}: labels must have x's shape without its last (feature) axis:"
      f" x {x.shape} -> expected {batch_shape}, got {labels.shape}."
    )
  if bias is not None:
    bias = _checks.as_floating(bias, "bias", _FN)
    if bias.shape != (vocab,):
      raise ValueError(
        f"{_FN}: bias must have shape [V] = ({vocab},), one per column of w"
        f" {w.shape}; got {bias.shape}."
      )
  mask = None
  if where is not None:
    mask = jnp.asarray(where)
    if mask.dtype != jnp.bool_:
      raise TypeError(
        f"{_FN}: where must be a boolean mask over the vocabulary; got dtype"
        f" {mask.dtype}. Build it with a comparison, for example"
        " where=allowed > 0."
      )
    if mask.shape != (vocab,):
      raise ValueError(
        f"{_FN}: where must have shape [V] = ({vocab},), one flag per class"
        f" (per column of w {w.shape}); got {mask.shape}. To drop examples,"
        " use ignore_index on their labels instead."
      )
  omega = _weights(weights, batch_shape)
  if reduction not in ("none", "sum", "mean"):
    raise ValueError(
      f"{_FN}: reduction must be 'none', 'sum' or 'mean'; got {reduction!r}."
      " 'mean' divides by the total weight of the examples that count, as"
      " torch's cross_entropy does with ignore_index."
    )
  opts = _Options(
    alpha=_checks.static_fraction(label_smoothing, "label_smoothing", _FN),
    z_loss=_static_float(z_loss, "z_loss", positive=False),
    softcap=None if softcap is None else _static_float(softcap, "softcap"),
    ignore_index=_checks.static_index(ignore_index, "ignore_index", _FN),
    chunk=_chunk(chunk_size, _rows(batch_shape), hidden, vocab),
    precision=cast(lax.PrecisionLike, tuple(precision))
    if isinstance(precision, list)
    else precision,
    reduction=reduction,
  )
  x2 = x.reshape(-1, hidden)
  lab = labels.reshape(-1)
  omega = None if omega is None else omega.reshape(-1)
  args = (x2, w, bias, lab, mask, omega, opts)
  if not _checks.static_flag(check_labels, "check_labels", _FN):
    out = _linear_ce_jit(*args)
  elif _checks.is_concrete(x2, w, bias, lab, mask, omega):
    out = _linear_ce_checked(*args)  # eager: a failed check raises here
  else:
    out = _linear_ce_checked_jit(*args)
  out = cast(jax.Array, out)  # jax types a custom_vjp's result as object
  return out if reduction != "none" else out.reshape(batch_shape)


def _weights(weights, batch_shape):
  """Per-example weights, broadcast to the labels' shape, or None."""
  if weights is None:
    return None
  omega = _checks.as_floating(weights, "weights", _FN)
  try:
    ok = jnp.broadcast_shapes(omega.shape, batch_shape) == tuple(batch_shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"{_FN}: weights must have the labels' shape {tuple(batch_shape)} (one"
      f" weight per example), or broadcast to it; got {omega.shape}."
    )
  return jnp.broadcast_to(omega, batch_shape)


class _Options(NamedTuple):
  """The static configuration (hashable, passed as one nondiff argument)."""

  alpha: float
  z_loss: float
  softcap: float | None
  ignore_index: int | None
  chunk: int
  precision: lax.PrecisionLike
  reduction: str = "none"


def _static_float(value: object, name: str, *, positive: bool = True) -> float:
  """A Python number > 0 (or >= 0 without `positive`), fixed at trace time."""
  rule = "> 0" if positive else ">= 0"
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"{_FN}: {name} must be a Python float, not a traced array: it is fixed"
      " at trace time. Close over it or mark it static in jax.jit."
    )
  try:
    v = float(value)  # type: ignore[arg-type]
  except TypeError as e:
    raise TypeError(f"{_FN}: {name} must be a float {rule}; got {value!r}.") from e
  if math.isnan(v) or math.isinf(v) or v < 0 or (positive and v == 0):
    hint = (
      " 1e-4 is a common choice; 0 turns it off."
      if name == "z_loss"
      else (" 30.0 is a common choice; None turns it off.")
    )
    raise ValueError(f"{_FN}: {name} must be finite and {rule}; got {value!r}.{hint}")
  return v


def _rows(batch_shape) -> int | None:
  """N as an int, or the symbolic product when a dimension is symbolic."""
  if all(isinstance(d, int) for d in batch_shape):
    return math.prod(batch_shape)
  return None


def _chunk(chunk_size: object, n: int | None, hidden: int, vocab: int) -> int:
  """The vocabulary chunk: checked if given, else chosen from N, H and V."""
  del hidden  # the N x H and H x chunk operands are small next to N x chunk
  if chunk_size is not None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
      raise TypeError(
        f"{_FN}: chunk_size must be a Python int or None; got"
        f" {type(chunk_size).__name__} {chunk_size!r}."
      )
    if chunk_size <= 0:
      raise ValueError(
        f"{_FN}: chunk_size must be positive; got {chunk_size}. Pass None to"
        " choose one from the shapes, or a multiple of 128 such as 1024."
      )
    return min(chunk_size, vocab)
  if not isinstance(n, int):
    n = _SYMBOLIC_ROWS  # a symbolic batch (jax.export): a fixed bound
  elif n * vocab * 4 <= _SMALL_BYTES:
    return vocab  # small logits: one chunk, no loop (as cheap as dense)
  lanes = min(_BLOCK_BYTES // (4 * max(n, 1)), vocab // 32) // _LANE
  chunk = max(1, lanes) * _LANE
  if chunk >= vocab:
    return vocab
  for c in range(chunk, chunk // 2, -_LANE):
    if vocab % c == 0:
      return c
  return chunk


def _encode(labels, vocab, ignore_index):
  """Labels of any integer dtype as int32: the class where in [0, V),
  _IGNORED for ignore_index, _INVALID otherwise. Compared in their own dtype
  (_checks.label_index), so none wraps or promotes."""
  index, in_range, ignored = _checks.label_index(labels, vocab, ignore_index)
  return jnp.where(ignored, _IGNORED, jnp.where(in_range, index, _INVALID))


_IGNORED, _INVALID = -1, -2


def _report_bad_labels(labels, where, vocab, ignore_index) -> None:
  """Out-of-range and masked-out labels (check_labels=True); O(N)."""
  code = _encode(labels, vocab, ignore_index)
  _, invalid, masked_out = _row_flags(code, where, vocab)
  _checks.report_labels(
    _FN,
    labels,
    vocab,
    ignore_index,
    invalid,
    None if where is None else masked_out,
  )


def _row_flags(labels, where, vocab):
  """Returns (dropped, invalid, masked_out), each [N] bool, for the int32
  labels of _encode.

  dropped: ignore_index, a target class masked out by `where`, or any label
    when `where` masks every class; such rows give 0.
  invalid: outside [0, V) and not ignore_index, with some class unmasked;
    such rows become NaN. With every class masked the slice is empty
    (masking means slicing), so no label is read.
  masked_out: an in-range target whose class `where` masks out while other
    classes are left (reported under checkify).
  """
  in_range = labels >= 0
  ignored = labels == _IGNORED
  invalid = labels == _INVALID
  if where is None:
    return ignored, invalid, jnp.zeros_like(in_range)
  present = jnp.any(where)
  kept = _at(where, jnp.clip(labels, 0, vocab - 1))
  masked_out = present & in_range & ~ignored & ~kept
  return ignored | ~present | masked_out, invalid & present, masked_out


def _at(where, index):
  """where[index] for the [V] mask and [N] labels. Under explicit sharding the
  result is sharded like the labels (the V flags are gathered)."""
  if _explicit_spec(index) is None:
    return where[index]
  return where.at[index].get(out_sharding=jax.typeof(index).sharding)


def _compute_dtype(x, w, bias):
  dtype = jnp.result_type(x, w) if bias is None else jnp.result_type(x, w, bias)
  return dtype, _checks.compute_dtype(dtype)


def _num_classes(where, vocab):
  return vocab if where is None else jnp.maximum(jnp.sum(where), 1)


def _chunk_logits(x, w, bias, where, start, size, opts):
  """One chunk's capped, masked logits [N, size], with tanh(u/c) and the mask.

  `start` may be traced (inside the loop) or static (the last, short chunk).
  """
  # x is in the compute dtype, or in w's 16-bit dtype: a bfloat16 x @ w runs
  # as it is, products exact and sums in float32 (widening x would cost XLA a
  # float32 copy of all of x)
  ct = _checks.compute_dtype(jnp.result_type(x, w))
  wc = _take(w, start, size).astype(x.dtype)
  z = lax.dot_general(
    x,
    wc,
    (((1,), (0,)), ((), ())),
    precision=opts.precision,
    preferred_element_type=ct,
  )
  if bias is not None:
    z = z + _take(bias, start, size).astype(ct)
  t = None
  if opts.softcap is not None:
    t = jnp.tanh(z / opts.softcap)
    z = opts.softcap * t
  m = None
  if where is not None:
    m = _take(where, start, size)
    z = jnp.where(m, z, -jnp.inf)
  return wc, z, t, m


def _take(a, start, size):
  """a[..., start:start + size], the chunk of a loop-invariant array."""
  if jnp.dtype(a.dtype).itemsize == 2:
    return _take_16(a, start, size)
  return lax.dynamic_slice_in_dim(a, start, size, a.ndim - 1)


def _put(a, chunk, start):
  """a with a[..., start:start + size] = chunk, in place in a loop carry."""
  if jnp.dtype(a.dtype).itemsize == 2:
    return _put_16(a, chunk, start)
  return lax.dynamic_update_slice_in_dim(a, chunk, start, a.ndim - 1)


# 16-bit floats are sliced and updated as their uint16 bits. XLA:CPU has no
# 16-bit float dynamic-slice: its float normalisation widens the slice's
# operand, all of the loop-invariant w, to float32, and loop-invariant code
# motion then hoists that copy out of the loop (H V 4 bytes). A bit cast of w
# is just as invariant, and hoisted too (H V 2 bytes). Inside a conditional
# the cast stays in the loop, where XLA fuses it into the slice: no copy. The
# bit casts have no derivative, so the two get their (linear) JVPs explicitly
# and higher derivatives stay right.


def _in_loop(fn, start, *args):
  """fn(*args), kept in the loop body (see above): `start` is never negative,
  so the other branch, which gives zeros, never runs."""
  zeros = lambda *a: jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, *a))
  return lax.cond(start >= 0, fn, zeros, *args)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _take_16(a, start, size):
  def take(a, start):
    bits = lax.bitcast_convert_type(a, jnp.uint16)
    chunk = lax.dynamic_slice_in_dim(bits, start, size, a.ndim - 1)
    return lax.bitcast_convert_type(chunk, a.dtype)

  if isinstance(start, int):
    return take(a, start)
  return _in_loop(take, start, a, start)


@_take_16.defjvp
def _take_16_jvp(size, primals, tangents):
  a, start = primals
  return _take_16(a, start, size), _take(tangents[0], start, size)


@jax.custom_jvp
def _put_16(a, chunk, start):
  bits = lax.bitcast_convert_type(a, jnp.uint16)
  update = lax.bitcast_convert_type(chunk.astype(a.dtype), jnp.uint16)
  bits = lax.dynamic_update_slice_in_dim(bits, update, start, a.ndim - 1)
  return lax.bitcast_convert_type(bits, a.dtype)


@_put_16.defjvp
def _put_16_jvp(primals, tangents):
  a, chunk, start = primals
  ta, tc, _ = tangents
  return _put_16(a, chunk, start), _put(ta, tc.astype(ta.dtype), start)


def _over_chunks(body, carry, vocab, chunk, traced_tail=False):
  """Runs body(carry, start, size) over [0, V) in chunks; the last may be short.
  With `traced_tail`, a short last chunk after the loop gets its start from the
  loop (a traced value, so that its body compiles as the loop's does)."""
  full, tail = divmod(vocab, chunk)
  if full == 1:
    carry = body(carry, 0, chunk)
  elif full > 1 and traced_tail and tail:

    def step(j, c):
      return body(c[0], j * chunk, chunk), c[1] + chunk

    carry, end = lax.fori_loop(0, full, step, (carry, jnp.int32(0)))
    return body(carry, end, tail)
  elif full > 1:
    carry = lax.fori_loop(0, full, lambda j, c: body(c, j * chunk, chunk), carry)
  if tail:
    carry = body(carry, full * chunk, tail)
  return carry


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _linear_ce(x, w, bias, labels, where, opts):
  return _linear_ce_fwd(x, w, bias, labels, where, opts)[0]


def _linear_ce_fwd(x, w, bias, labels, where, opts):
  out_dtype, _ = _compute_dtype(x, w, bias)
  # the loop runs per device, over its columns of w (see Sharding below)
  stats = _kernel(_fwd_stats, opts, (x, w, labels), (bias, where))
  shift, log_norm = stats[:2]
  loss = _row_losses(stats, labels, where, w.shape[1], opts)
  # saves x, w, bias, labels, where and shift, log_norm [N]; recomputes z
  return loss.astype(out_dtype), (x, w, bias, labels, where, shift, log_norm)


def _row_losses(stats, labels, where, vocab, opts):
  """Per-example losses [N] in the compute dtype from (shift, log_norm, z_t,
  z_sum): 0 for dropped and empty rows, NaN for invalid labels. No NaN or
  inf - inf is formed on the way (a masked target logit is -inf)."""
  shift, log_norm, z_t, z_sum = stats
  dropped, invalid, _ = _row_flags(labels, where, vocab)
  off = dropped | is_empty(log_norm)
  log_norm = jnp.where(off, 0.0, log_norm)
  z_t = jnp.where(off, shift, z_t)
  lse = shift + log_norm
  # (shift - z_t) + log_norm, not lse - z_t: exact for logits near 1e30
  loss = (shift - z_t) + log_norm
  if opts.alpha:
    mean_z = jnp.where(off, shift, z_sum / _num_classes(where, vocab))
    loss = (1.0 - opts.alpha) * loss + opts.alpha * ((shift - mean_z) + log_norm)
  if opts.z_loss:
    loss = loss + opts.z_loss * lse * lse
  return _poisoned(jnp.where(off, 0.0, loss), invalid)


def _poisoned(values, invalid):
  """values [N], NaN in the rows with an invalid label. The NaN is log(-1),
  formed only in those rows: no NaN constant, so jax.debug_nans (op by op
  too) and checkify stay quiet on valid labels (as _losses._finish)."""
  return values + jnp.log(jnp.where(invalid, -1.0, 1.0).astype(values.dtype))


def _fwd_stats(x, w, labels, bias, where, *, opts, offset):
  """Per-row running max, sum of exp (online logsumexp), target logit and
  sum of the unmasked logits [N], over the columns of w, which are the
  classes [offset, offset + V) of labels."""
  _, ct = _compute_dtype(x, w, bias)
  n, vocab = x.shape[0], w.shape[1]
  xc = x if x.dtype == w.dtype else x.astype(ct)  # see _chunk_logits
  lab = labels - offset

  def body(carry, start, size):
    # online logsumexp: running max m and sum s of exp(z - m)
    m, s, z_t, z_sum = carry
    _, z, _, mask = _chunk_logits(xc, w, bias, where, start, size, opts)
    m_new = jnp.maximum(m, jnp.max(z, axis=1))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(z - shift[:, None]), axis=1)
    # the target logit, gathered from the chunk that holds it: O(N), no pass
    local = lab - start
    picked = jnp.take_along_axis(
      z, jnp.clip(local, 0, size - 1)[:, None], axis=1, mode="clip"
    )[:, 0]
    z_t = z_t + jnp.where((local >= 0) & (local < size), picked, 0.0)
    if opts.alpha:
      z_sum = z_sum + jnp.sum(z if mask is None else jnp.where(mask, z, 0.0), axis=1)
    return m_new, s, z_t, z_sum

  init = (
    jnp.full((n,), -jnp.inf, ct),
    jnp.zeros((n,), ct),
    jnp.zeros((n,), ct),
    jnp.zeros((n,), ct),
  )
  init = _varying(init, x, w, labels, bias, where)
  return _over_chunks(body, init, vocab, opts.chunk)


def _combine_stats(stats, vocab_axes):
  """(shift, log_norm, z_t, z_sum) [N], merged over the devices of
  `vocab_axes`: three [N] all-reduces (max; sum of exp and target logit, and
  sum of logits with label smoothing)."""
  m, s, z_t, z_sum = stats
  if vocab_axes:
    local = jnp.where(m == -jnp.inf, 0.0, m)
    m = lax.pmax(m, vocab_axes)
    rescale = jnp.exp(local - jnp.where(m == -jnp.inf, 0.0, m))
    s = jnp.where(s == 0, 0.0, s * rescale)
    s, z_t, z_sum = lax.psum((s, z_t, z_sum), vocab_axes)
  return jnp.where(m == -jnp.inf, 0.0, m), jnp.log(s), z_t, z_sum


def _linear_ce_bwd(opts, res, g):
  x, w, bias, labels, where, shift, log_norm = res
  dx, dw, db = _grads(x, w, bias, labels, where, shift, log_norm, g, opts)
  return _like(dx, x), _like(dw, w), _like(db, bias), None, None


def _grads(x, w, bias, labels, where, shift, log_norm, g, opts) -> tuple:
  """(dx, dw, dbias) of sum_n g_n L_n, in the primals' dtypes."""
  # d/dz: a (1 + 2 z_loss lse) - (1 - alpha) onehot - alpha / C * mask;
  # d/du = d/dz * (1 - tanh^2(u / c)); dx = d @ w.T, dw = x.T @ d, db = sum d
  _, ct = _compute_dtype(x, w, bias)
  vocab = w.shape[1]
  lab = labels
  dropped, invalid, _ = _row_flags(lab, where, vocab)
  empty = is_empty(log_norm)
  live_norm = jnp.where(empty, 0.0, log_norm)
  g = g.astype(ct)

  def per_row(coef):
    """A per-row coefficient [N]: 0 when dropped or empty, NaN if invalid."""
    return _poisoned(jnp.where(dropped | empty, 0.0, coef), invalid)

  lse = shift + log_norm
  g_a = per_row(g * (1.0 + 2.0 * opts.z_loss * lse) if opts.z_loss else g)
  g_t = per_row(g * (1.0 - opts.alpha))
  g_s = per_row(g * (opts.alpha / _num_classes(where, vocab))) if opts.alpha else None
  rows = (x, w, lab, shift, live_norm, g_a, g_t) + (() if g_s is None else (g_s,))
  return _kernel(_bwd_grads, opts, rows, (bias, where))


def _bwd_grads(x, w, labels, shift, live_norm, g_a, g_t, *rest, opts, offset):
  """dx, dw and dbias over the columns of w, which are the classes
  [offset, offset + V) of labels, and over these rows: on several devices,
  dx is partial (a sum over the vocabulary) and so are dw, dbias (over rows)."""
  bias, where = rest[-2:]
  g_s = rest[0][:, None] if len(rest) == 3 else None
  _, ct = _compute_dtype(x, w, bias)
  vocab = w.shape[1]
  # 16-bit x and w stay 16-bit (see _split_16): no float32 copy of x
  narrow = x.dtype == w.dtype and jnp.dtype(x.dtype).itemsize == 2
  xc = x if narrow else x.astype(ct)
  mm = functools.partial(
    lax.dot_general, precision=opts.precision, preferred_element_type=ct
  )
  lab = labels - offset
  shift, live_norm, g_a, g_t = (a[:, None] for a in (shift, live_norm, g_a, g_t))

  def body(carry, start, size):
    dx, dw, db = carry
    wc, z, t, mask = _chunk_logits(xc, w, bias, where, start, size, opts)
    d = jnp.exp((z - shift) - live_norm) * g_a
    cols = start + lax.broadcasted_iota(lab.dtype, (1, size), 1)
    d = d - jnp.where(cols == lab[:, None], g_t, 0.0)
    if g_s is not None:
      d = d - (g_s if mask is None else jnp.where(mask, g_s, 0.0))
    if t is not None:
      d = d * (1.0 - t * t)
    parts = _split_16(d, x.dtype) if narrow else (d,)
    dx = _add_rows(dx, parts, wc.astype(parts[0].dtype), mm)
    dw = _put(dw, _x_t_d(xc, parts, start, mm).astype(dw.dtype), start)
    if db is not None:
      db = _put(db, jnp.sum(d, axis=0).astype(db.dtype), start)
    return dx, dw, db

  init = (
    jnp.zeros(xc.shape, ct),
    jnp.zeros(w.shape, w.dtype),
    None if bias is None else jnp.zeros(bias.shape, bias.dtype),
  )
  init = _varying(init, x, w, labels, shift, g_a, g_t, g_s, bias, where)
  dx, dw, db = _over_chunks(body, init, vocab, opts.chunk, traced_tail=narrow)
  return dx.astype(x.dtype), dw, db


# A 16-bit backward pass keeps x and w in their dtype. XLA:CPU multiplies
# 16-bit matrices (float32 sums) only as they are; otherwise it widens both
# operands to float32, and a widened x (N H 4 bytes) is hoisted out of the
# loop. So the float32 d of a chunk is split into two 16-bit parts, hi + lo
# (hi = d rounded, lo = the rest rounded: d to about 16 bits in bfloat16,
# 22 in float16), whose products with x and w are exact in float32: the
# gradient is as accurate as with a float32 d, for two 16-bit products in
# place of one float32 product.


def _split_16(d, dtype):
  """d (float32) as (hi, lo) in the 16-bit `dtype`, hi + lo ~ d."""
  hi = d.astype(dtype)
  return hi, (d - hi.astype(d.dtype)).astype(dtype)


def _add_rows(acc, parts, wc, mm):
  """acc + sum_p p @ wc^T for the [N, H] float32 accumulator acc: in place, in
  a loop over row blocks whose products take at most 16 MiB, so that no second
  N x H array (the product before it is added) exists."""
  n, hidden = acc.shape
  rows = _BLOCK_BYTES // (4 * hidden * len(parts)) // 8 * 8
  product = lambda ps: sum(mm(p, wc, (((1,), (1,)), ((), ()))) for p in ps)
  if not isinstance(n, int) or rows >= n or rows < 8:
    return acc + product(parts)

  def add(acc, blocks, r0):
    block = lax.dynamic_slice_in_dim(acc, r0, blocks[0].shape[0], 0)
    return lax.dynamic_update_slice_in_dim(acc, block + product(blocks), r0, 0)

  def step(i, acc):
    return add(acc, [_take_rows(p, i * rows, rows) for p in parts], i * rows)

  full, tail = divmod(n, rows)
  acc = lax.fori_loop(0, full, step, acc)
  if tail:
    acc = add(acc, [lax.slice_in_dim(p, full * rows, n) for p in parts], full * rows)
  return acc


def _take_rows(a, start, size):
  """a[start:start + size] at a traced start; 16-bit as its bits (_take_16)."""
  if jnp.dtype(a.dtype).itemsize != 2:
    return lax.dynamic_slice_in_dim(a, start, size, 0)
  return _take_rows_16(a, start, size)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _take_rows_16(a, start, size):
  def take(a, start):
    bits = lax.bitcast_convert_type(a, jnp.uint16)
    rows = lax.dynamic_slice_in_dim(bits, start, size, 0)
    return lax.bitcast_convert_type(rows, a.dtype)

  return _in_loop(take, start, a, start)


@_take_rows_16.defjvp
def _take_rows_16_jvp(size, primals, tangents):
  a, start = primals
  return _take_rows_16(a, start, size), _take_rows(tangents[0], start, size)


def _x_t_d(xc, parts, start, mm):
  """sum_p x^T p, [H, size], for the chunk at `start`. With 16-bit x at a
  traced start, as (p^T x)^T, the transposes of the [N, size] parts and of the
  result inside conditionals (_in_loop): XLA would fold a visible transpose
  into the product, which then contracts x's major axis and is widened."""
  if len(parts) == 1 or isinstance(start, int):
    return sum(mm(xc, p, (((0,), (0,)), ((), ()))) for p in parts)
  transposed = lambda p: _in_loop(lambda a: a.T, start, p)
  product = sum(mm(transposed(p), xc, (((1,), (0,)), ((), ()))) for p in parts)
  return _in_loop(lambda a: a.T, start, product)


def _varying_axes(a) -> set:
  """The manual mesh axes (inside shard_map) over which `a` varies."""
  aval = jax.typeof(a)
  manual = getattr(aval, "manual_axis_type", None)  # "vma" before JAX 0.10
  return set(getattr(manual, "varying", None) or getattr(aval, "vma", ()))


def _varying(carry, *arrays):
  """The loop's initial carry, marked as varying over the manual mesh axes
  (inside shard_map) that the inputs vary over, so that the carry keeps its
  type through the loop."""
  axes = set().union(*(_varying_axes(a) for a in arrays if a is not None))
  if not axes:
    return carry
  return jax.tree.map(lambda c: lax.pcast(c, tuple(sorted(axes)), to="varying"), carry)


def _combine_grads(grads, row_axes, vocab_axes):
  """dx summed over `vocab_axes`; dw and dbias summed over `row_axes`."""
  dx, dw, db = grads
  if vocab_axes:
    dx = lax.psum(dx, vocab_axes)
  if row_axes:
    dw, db = lax.psum((dw, db), row_axes)
  return dx, dw, db


# ---------------------------------------------------------------------------
# Sharding: every device streams over its own columns of w.
#
# A chunk loop over a vocabulary that is split across devices cannot slice w
# at a traced offset without XLA gathering w (and replicating dw) onto every
# device. So the loops above run on one device's block (its rows of x, its
# columns of w, at a column offset), and only O(N) per-row statistics
# (forward) and the partial dx, dw and dbias (backward) cross devices:
#
# * explicit sharding (the shardings are in the arrays' types): jax.shard_map;
# * automatic sharding (XLA propagates them): custom_partitioning, whose
#   callback receives the operands' shardings when XLA partitions the program.
#
# On one device both are the plain loop. The batching and derivative rules of
# the custom_partitioning op (it has none of its own) use the plain loop.


class _Layout(NamedTuple):
  """Mesh axes that split the rows of x and the columns of w (disjoint)."""

  rows: tuple[str, ...]
  vocab: tuple[str, ...]


def _names(spec, dim: int) -> tuple[str, ...]:
  entry = spec[dim] if len(spec) > dim else None
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _layout(x_spec, w_spec) -> _Layout:
  rows = _names(x_spec, 0)
  return _Layout(rows, tuple(a for a in _names(w_spec, 1) if a not in rows))


def _entry(axes: tuple[str, ...]):
  return None if not axes else axes[0] if len(axes) == 1 else axes


def _specs(layout: _Layout, n_args: int, present):
  """PartitionSpecs of the kernel operands and results."""
  rows, vocab = _entry(layout.rows), _entry(layout.vocab)
  args = (P(rows, None), P(None, vocab)) + (P(rows),) * (n_args - 2)
  return args + (P(vocab),) * sum(present)


def _out_specs(fn, layout: _Layout, present):
  rows, vocab = _entry(layout.rows), _entry(layout.vocab)
  if fn is _fwd_stats:
    return (P(rows),) * 4
  return (P(rows, None), P(None, vocab)) + ((P(vocab),) if present[0] else ())


def _local(fn, opts, layout: _Layout, present):
  """fn on one device's block, then the collectives over the layout's axes."""

  def run(*arrays):
    bias = where = None
    rest = list(arrays)
    if present[1]:
      where = rest.pop()
    if present[0]:
      bias = rest.pop()
    offset = 0
    if layout.vocab:
      offset = lax.axis_index(layout.vocab) * rest[1].shape[1]
    out = fn(*rest, bias, where, opts=opts, offset=offset)
    if fn is _fwd_stats:
      return _combine_stats(out, layout.vocab)
    dx, dw, db = _combine_grads(out, layout.rows, layout.vocab)
    return (dx, dw) if db is None else (dx, dw, db)

  return run


def _kernel(fn, opts, args, cols):
  """fn(*args, *cols) over all rows and columns, on however many devices."""
  present = tuple(c is not None for c in cols)
  arrays = tuple(args) + tuple(c for c in cols if c is not None)
  explicit = _explicit_layout(args[0], args[1])
  if explicit is None and jax.device_count() == 1:
    # nothing to partition: the plain loop, which XLA fuses with its callers
    out = _local(fn, opts, _Layout((), ()), present)(*arrays)
  elif explicit is None:
    out = _partitioned(fn, opts, len(args), present)(*arrays)
  else:
    mesh, layout = explicit
    specs = _specs(layout, len(args), present)
    arrays = tuple(_reshard(a, s) for a, s in zip(arrays, specs, strict=True))
    out = jax.shard_map(
      _local(fn, opts, layout, present),
      mesh=mesh,
      in_specs=specs,
      out_specs=_out_specs(fn, layout, present),
      check_vma=False,
    )(*arrays)
  if fn is _bwd_grads and not present[0]:
    out = (*out, None)
  return out


def _explicit_spec(a):
  """a's PartitionSpec if a is split over explicit mesh axes, else None."""
  sharding = getattr(jax.typeof(a), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if sharding is None or mesh is None or mesh.empty:
    return None
  explicit = {
    n
    for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
    if t == AxisType.Explicit
  }
  spec = sharding.spec
  if not any(set(_names(spec, d)) & explicit for d in range(len(spec))):
    return None
  return spec


def _explicit_layout(x, w):
  """(mesh, layout) if x's rows or w's columns are split over explicit axes."""
  x_spec, w_spec = _explicit_spec(x), _explicit_spec(w)
  if x_spec is None and w_spec is None:
    return None
  layout = _layout(x_spec or P(), w_spec or P())
  if not layout.rows and not layout.vocab:
    return None
  return jax.typeof(x if x_spec is not None else w).sharding.mesh, layout


def _reshard(a, spec):
  """a resharded to `spec` (explicit sharding), if it is not already."""
  current = _explicit_spec(a)
  if current is not None and P(*current) == P(*spec):
    return a
  return jax.sharding.reshard(a, spec)


def _like(cotangent, primal):
  """The cotangent typed like its primal: summed over the manual mesh axes
  (inside shard_map) over which only the cotangent varies, as the transpose of
  the implicit broadcast of an invariant input, and sharded like the primal
  (explicit sharding)."""
  if primal is None:
    return cotangent
  extra = _varying_axes(cotangent) - _varying_axes(primal)
  if extra:
    cotangent = lax.psum(cotangent, tuple(sorted(extra)))
  spec = _explicit_spec(primal)
  return cotangent if spec is None else _reshard(cotangent, spec)


def _rule(fn, n_args: int, present) -> str:
  """The Shardy rule: n rows, h features, v vocabulary."""
  operands = ["n h", "h v"] + ["n"] * (n_args - 2) + ["v"] * sum(present)
  if fn is _fwd_stats:
    results = ["n"] * 4
  else:
    results = ["n h", "h v"] + (["v"] if present[0] else [])
  return ", ".join(operands) + " -> " + ", ".join(results)


@functools.cache
def _partitioned(fn, opts, n_args: int, present):
  """fn as one op that XLA's partitioner hands to us with its operands'
  shardings; batched and differentiated as the plain loop."""
  plain = _local(fn, opts, _Layout((), ()), present)

  def shardings(mesh, arg_shapes):
    specs = [getattr(a.sharding, "spec", P()) for a in arg_shapes[:2]]
    return _layout(*specs)

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    layout = shardings(mesh, arg_shapes)
    named = lambda specs: tuple(NamedSharding(mesh, s) for s in specs)
    return (
      mesh,
      _local(fn, opts, layout, present),
      named(_out_specs(fn, layout, present)),
      named(_specs(layout, n_args, present)),
    )

  def infer(mesh, arg_shapes, result_shape):
    del result_shape
    layout = shardings(mesh, arg_shapes)
    return tuple(NamedSharding(mesh, s) for s in _out_specs(fn, layout, present))

  op = custom_partitioning(plain)
  op.def_partition(
    partition,
    infer_sharding_from_operands=infer,
    sharding_rule=_rule(fn, n_args, present),
    need_replication_factors=("h",),
  )

  batched = jax.custom_batching.custom_vmap(op)

  @batched.def_vmap
  def _vmap(axis_size, in_batched, *arrays):
    if fn is _fwd_stats and not in_batched[1] and not any(in_batched[n_args:]):
      # per-row statistics: the mapped axis joins the rows

      def rows(a, b):
        a = a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
        return a.reshape(-1, *a.shape[2:])

      x = rows(arrays[0], in_batched[0])
      per_row = [
        rows(a, b) for a, b in zip(arrays[2:n_args], in_batched[2:n_args], strict=True)
      ]
      out = batched(x, arrays[1], *per_row, *arrays[n_args:])
      return tuple(o.reshape(axis_size, -1) for o in out), (True,) * len(out)
    # per-example dw: one call per element of the mapped axis

    def one(mapped):
      it = iter(mapped)
      return batched(
        *[next(it) if b else a for a, b in zip(arrays, in_batched, strict=True)]
      )

    out = lax.map(one, [a for a, b in zip(arrays, in_batched, strict=True) if b])
    return out, (True,) * len(out)

  @jax.custom_jvp
  def kernel(*arrays):
    return batched(*arrays)

  @kernel.defjvp
  def _jvp(primals, tangents):
    return jax.jvp(plain, primals, tangents)

  return kernel


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


# ---------------------------------------------------------------------------
# Reduced modes: the loss is one number, so the forward rule forms dx, dw and
# dbias (the per-example gradients summed with the weights r_n) and the
# backward rule only scales them by the scalar cotangent.


def _row_weights(labels, where, weights, vocab, opts, ct):
  """(r, counted, denominator): loss = sum_n r_n L_n. For 'mean', r_n =
  omega_n / D with D the total weight of the counted rows (1 when D = 0, so
  that a batch of which nothing counts gives 0)."""
  dropped, _, _ = _row_flags(labels, where, vocab)
  omega = jnp.ones(labels.shape, ct) if weights is None else weights.astype(ct)
  counted = ~dropped
  if opts.reduction == "sum":
    return omega, counted, None
  total = jnp.sum(jnp.where(counted, omega, 0.0))
  denom = jnp.where(total == 0, 1.0, total)
  return omega / denom, counted, denom


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _linear_ce_reduced(x, w, bias, labels, where, weights, opts):
  out_dtype, ct = _compute_dtype(x, w, bias)
  stats = _kernel(_fwd_stats, opts, (x, w, labels), (bias, where))
  losses = _row_losses(stats, labels, where, w.shape[1], opts)
  r, _, _ = _row_weights(labels, where, weights, w.shape[1], opts, ct)
  return jnp.sum(r * losses).astype(out_dtype)


def _linear_ce_reduced_fwd(x, w, bias, labels, where, weights, opts):
  out_dtype, ct = _compute_dtype(x, w, bias)
  vocab = w.shape[1]
  r, counted, denom = _row_weights(labels, where, weights, vocab, opts, ct)
  if _one_device_wide(x, w, bias, weights):
    # row blocks over all of V: three matmuls in all
    stats, (dx, dw, db) = _one_pass(x, w, bias, labels, where, r, opts)
  else:
    # vocabulary chunks, per device: the normalisers, then the gradient
    stats = _kernel(_fwd_stats, opts, (x, w, labels), (bias, where))
    dx, dw, db = _grads(x, w, bias, labels, where, stats[0], stats[1], r, opts)
  losses = _row_losses(stats, labels, where, vocab, opts)
  value = jnp.sum(r * losses)
  d_omega = None
  if weights is not None:
    d_omega = losses if denom is None else (losses - counted * value) / denom
    d_omega = d_omega.astype(weights.dtype)
  return value.astype(out_dtype), (dx, dw, db, d_omega, x, w, bias, weights)


# The one-pass reduced kernel takes blocks of rows against all of w: a
# [R, V] float32 block of at most 16 MiB and at most 256 rows (a multiple of
# 8, at least 8). Measured on CPU (N=4096, H=512, 2 loaded cores, interleaved
# medians against dense autodiff): V=8192, R=256: 0.98x (R=64: 1.25x);
# V=32768, R=128: 1.00x (R=64: 1.11x).
_ROW_BLOCK_BYTES = 16 * 2**20
_ROW_BLOCK_MAX = 256
# Each row block reads and writes the float32 H x V dw accumulator, so short
# blocks (a wide vocabulary) make that traffic dominate: at V=131072 (R=32)
# the one pass measured 2.7x dense, where the two-pass chunked kernel runs at
# 1.0x. Below 128 rows per block the chunked kernel is used instead.
_ROW_BLOCK_MIN = 128


def _row_block(n: int, vocab: int) -> int:
  rows = min(_ROW_BLOCK_BYTES // (4 * vocab), _ROW_BLOCK_MAX)
  return min(n, max(8, rows // 8 * 8))


def _one_device_wide(x, w, bias, weights) -> bool:
  """True where the one-pass kernel applies and pays: 32- or 64-bit floats,
  row blocks of at least 128 rows (or all rows), one device,
  no explicit sharding and no manual mesh axes. It multiplies d by all of w,
  so a 16-bit w would be widened whole (see _take_16); on several devices the
  per-device vocabulary chunks of _kernel keep w where it is."""
  arrays = [a for a in (x, w, bias, weights) if a is not None]
  if any(jnp.dtype(a.dtype).itemsize < 4 for a in (x, w)):
    return False
  if not isinstance(x.shape[0], int):
    return False  # a symbolic batch (jax.export): no static row blocks
  if _row_block(x.shape[0], w.shape[1]) < min(x.shape[0], _ROW_BLOCK_MIN):
    return False  # blocks too short: the dw traffic would dominate
  if jax.device_count() > 1 or _explicit_layout(x, w) is not None:
    return False
  return not any(_varying_axes(a) for a in arrays)


def _one_pass(x, w, bias, labels, where, r, opts):
  """((shift, log_norm, z_t, z_sum) [N], (dx, dw, dbias)) of sum_n r_n L_n,
  in one pass over blocks of rows, each against all of w: the logits, dx and
  dw are three matmuls, and dw accumulates in the compute dtype."""
  _, ct = _compute_dtype(x, w, bias)
  n, vocab = x.shape[0], w.shape[1]
  dropped, invalid, _ = _row_flags(labels, where, vocab)

  def per_row(coef):
    return _poisoned(jnp.where(dropped, 0.0, coef.astype(ct)), invalid)

  rows = [per_row(r), per_row(r * (1.0 - opts.alpha))]
  if opts.alpha:
    rows.append(per_row(r * (opts.alpha / _num_classes(where, vocab))))
  xc, wc = x.astype(ct), w.astype(ct)
  bc = None if bias is None else bias.astype(ct)
  cols = lax.broadcasted_iota(labels.dtype, (1, vocab), 1)
  mm = functools.partial(
    lax.dot_general, precision=opts.precision, preferred_element_type=ct
  )

  def body(carry, start, size):
    stats, dx, dw, db = carry
    take = lambda a: lax.dynamic_slice_in_dim(a, start, size, 0)
    xb, lb = take(xc), take(labels)
    r_a, r_t, *r_s = (take(a)[:, None] for a in rows)
    z = mm(xb, wc, (((1,), (0,)), ((), ())))
    if bc is not None:
      z = z + bc
    t = None
    if opts.softcap is not None:
      t = jnp.tanh(z / opts.softcap)
      z = opts.softcap * t
    if where is not None:
      z = jnp.where(where, z, -jnp.inf)
    m = jnp.max(z, axis=1)
    shift = jnp.where(m == -jnp.inf, 0.0, m)
    e = jnp.exp(z - shift[:, None])
    total = jnp.sum(e, axis=1)
    empty = total == 0
    log_norm = jnp.log(total)
    picked = jnp.take_along_axis(
      z, jnp.clip(lb, 0, vocab - 1)[:, None], axis=1, mode="clip"
    )[:, 0]
    z_t = jnp.where(lb >= 0, picked, 0.0)
    z_sum = jnp.zeros_like(z_t)
    if opts.alpha:
      z_sum = jnp.sum(z if where is None else jnp.where(where, z, 0.0), axis=1)
    g_a = r_a
    if opts.z_loss:
      lse = shift + jnp.where(empty, 0.0, log_norm)
      g_a = g_a * (1.0 + 2.0 * opts.z_loss * lse[:, None])
    g_a = jnp.where(empty[:, None], 0.0, g_a / jnp.where(empty, 1.0, total)[:, None])
    d = e * g_a - jnp.where(cols == lb[:, None], r_t, 0.0)
    if r_s:
      d = d - (r_s[0] if where is None else jnp.where(where, r_s[0], 0.0))
    if t is not None:
      d = d * (1.0 - t * t)
    dxb = mm(d, wc, (((1,), (1,)), ((), ())))
    dx = lax.dynamic_update_slice_in_dim(dx, dxb, start, 0)
    dw = dw + mm(xb, d, (((0,), (0,)), ((), ())))
    if db is not None:
      db = db + jnp.sum(d, axis=0)
    new = (shift, log_norm, z_t, z_sum)
    stats = tuple(
      lax.dynamic_update_slice_in_dim(a, b, start, 0)
      for a, b in zip(stats, new, strict=True)
    )
    return stats, dx, dw, db

  zeros = lambda shape: jnp.zeros(shape, ct)
  init = (
    tuple(zeros((n,)) for _ in range(4)),
    zeros(xc.shape),
    zeros(wc.shape),
    None if bc is None else zeros(bc.shape),
  )
  block = _row_block(n, vocab)
  full, tail = divmod(n, block)
  carry = init
  if full == 1:
    carry = body(carry, 0, block)
  elif full > 1:
    step = lambda j, c: body(c, j * block, block)
    carry = lax.fori_loop(0, full, step, carry)
  if tail:
    carry = body(carry, full * block, tail)
  stats, dx, dw, db = carry
  db = None if db is None or bias is None else db.astype(bias.dtype)
  return stats, (dx.astype(x.dtype), dw.astype(w.dtype), db)


def _linear_ce_reduced_bwd(opts, res, g):
  del opts
  dx, dw, db, d_omega, x, w, bias, weights = res
  scale = lambda d, p: None if d is None else _like((g * d).astype(d.dtype), p)
  return (
    scale(dx, x),
    scale(dw, w),
    scale(db, bias),
    None,
    None,
    scale(d_omega, weights),
  )


_linear_ce_reduced.defvjp(_linear_ce_reduced_fwd, _linear_ce_reduced_bwd)


def _linear_ce_entry(x, w, bias, labels, where, weights, opts):
  """The loss of the checked arguments, labels of any integer dtype."""
  codes = _encode(labels, w.shape[1], opts.ignore_index)
  if opts.reduction != "none":
    return _linear_ce_reduced(x, w, bias, codes, where, weights, opts)
  out = cast(jax.Array, _linear_ce(x, w, bias, codes, where, opts))
  if weights is None:
    return out
  _, ct = _compute_dtype(x, w, bias)
  return (out.astype(ct) * weights.astype(ct)).astype(out.dtype)


def _linear_ce_checked(x, w, bias, labels, where, weights, opts):
  """The loss, then checkify.check on its labels (check_labels=True)."""
  # the check comes after the custom_vjp call: see _checks.report_labels
  out = _linear_ce_entry(x, w, bias, labels, where, weights, opts)
  _report_bad_labels(labels, where, w.shape[1], opts.ignore_index)
  return out


# Checked arguments go through one compiled call, as in jax.nn: eager calls
# then cost one dispatch instead of one per primitive.
_linear_ce_jit = jax.jit(_linear_ce_entry, static_argnums=(6,))
_linear_ce_checked_jit = jax.jit(_linear_ce_checked, static_argnums=(6,))
