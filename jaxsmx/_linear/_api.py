"""The public function: its arguments checked, then the kernel it runs."""

from __future__ import annotations

import math
from typing import cast

import jax
import jax.core
import jax.numpy as jnp
from jax import lax

from jaxsmx import _checks
from jaxsmx._inputs import array_inputs
from jaxsmx._linear import _tiling
from jaxsmx._linear._per_example import per_example_loss
from jaxsmx._linear._reduced import reduced_loss
from jaxsmx._linear._rows import FN, Options, compute_dtype, encode, report_bad_labels
from jaxsmx._linear._sharding import aligned


@array_inputs
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
  class_weights: jax.typing.ArrayLike | None = None,
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
  but computed chunk by chunk over the vocabulary. With class weights
  :math:`w_k` (torch's ``weight=``), as in that function, the label's term
  is weighted by :math:`w_t` and each class's smoothing term by :math:`w_k`:

  .. math::
    L = (1-\alpha)\,w_t(\ell - z_t) + \frac{\alpha}{C}\sum_{k\,:\,m_k}
      w_k(\ell - z_k) + \lambda\,\ell^2 .

  Args:
    x: ``[..., H]`` features, floating.
    w: ``[H, V]`` projection onto the vocabulary, floating: the logits are
      ``x @ w``.
    labels: ``[...]`` integer classes in ``[0, V)``, of ``x.shape[:-1]``
      or broadcasting to it.
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
      ``"mean"`` divides that by :math:`\sum_n \omega_n w_{t_n}` (the
      class weight of each label, 1 without ``class_weights``) over the
      examples that count, which excludes ignored examples (``ignore_index``)
      and dropped ones (target class masked out), as
      ``torch.nn.functional.cross_entropy`` does with ``ignore_index`` and
      ``weight``. When no
      example counts (all ignored, all weights 0, or every class masked) the
      mean is 0 with gradient 0, where torch gives NaN.
    weights: keyword-only per-example weights :math:`\omega_n` (loss masks,
      token weights), floating, of ``labels``' shape or broadcasting to it;
      None means 1. With ``reduction="none"`` the result is
      :math:`\omega_n L_n`. Differentiable. A weight of 0 drops its example
      as ``ignore_index`` does (a loss mask): its label is not read, so a
      padding label outside ``[0, V)`` gives no NaN, and its loss and
      gradients, the weight's own included, are 0.
    class_weights: keyword-only ``[V]`` weight :math:`w_k` of each class
      (torch's ``weight``), floating, or None for 1: the label's term is
      weighted by its class's weight, each class's smoothing term by its own
      (as torch), and ``"mean"`` divides by the summed weights of the counted
      labels. The z-loss is not weighted. Differentiable (torch refuses its
      gradient).
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
  masked vocabulary, or an empty one (V = 0), gives 0 with gradient 0 and no
  label is read. An empty batch gives an empty result (0 when reduced) with
  gradient 0; with H = 0 the logits are ``bias`` (or 0). A :math:`+\infty` or NaN logit
  makes its example NaN. No NaN is formed on the way for finite inputs, so
  ``jax.debug_nans`` and ``checkify.float_checks`` stay quiet.

  Which reduction: when the loss is summed or averaged straight away (language
  model training), pass ``reduction="mean"`` (or ``"sum"``) instead of
  calling ``.mean()`` on the per-example losses. The loss is then one number,
  so the forward pass already forms ``dx``, ``dw`` and ``dbias`` and the
  backward pass only scales them by the scalar cotangent: no pass over the
  vocabulary runs in the backward pass, and its residuals are the gradients
  themselves (``N x H``, ``H x V``) rather than ``x`` and ``w``. Neither mode
  keeps anything of size ``N x V``; the documentation's "Internals" page gives
  the measured working memory of each. In float32 on one device the reduced
  mode runs the three matmuls of dense autodiff
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
    :math:`\partial L/\partial z = a(W + 2\lambda\ell) - (1-\alpha)\,w_t\,
    \mathrm{onehot}(t) - \frac{\alpha}{C} w \odot m`, with
    :math:`W = (1-\alpha)w_t + \frac{\alpha}{C}\sum_k m_k w_k` (1 and
    :math:`w = 1` without class weights), and :math:`\partial L/\partial u
    = \partial L/\partial z \cdot (1 - \tanh^2(u/c))`, then
    :math:`dx = \delta W^\top`, :math:`dW = x^\top \delta`,
    :math:`db = \sum_n \delta_n`. A reduced loss :math:`\sum_n r_n L_n`, with
    :math:`r_n = \omega_n` (sum) or :math:`\omega_n / D` (mean, :math:`D`
    the total counted weight), has the weighted sum of these per-example
    gradients, :math:`\delta \to r \odot \delta`; its weights' gradient is
    :math:`L_n` (sum) or :math:`(L_n - [n \text{ counts}]\,w_{t_n} M)/D`
    (mean). The class weights' gradient is :math:`\sum_n r_n \partial
    L_n/\partial w_k`, with :math:`\partial L/\partial w_k = (1-\alpha)
    [k = t](\ell - z_t) + \frac{\alpha}{C} m_k (\ell - z_k)`, less
    :math:`M \sum_{n\,\text{counted},\,t_n = k} r_n` under "mean".

    How the kernels tile the work, and what they keep, is described in the
    documentation's "Internals" page.

  References:
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
    arXiv:2411.09009 (2024). Chowdhery et al., "PaLM", arXiv:2204.02311 (z-loss).
    Gemma Team, "Gemma 2", arXiv:2408.00118 (logit soft-capping).
  """
  x, w, labels, bias, mask = _arrays(x, w, labels, bias, where)
  hidden, vocab = w.shape
  batch_shape = x.shape[:-1]
  omega = _weights(weights, batch_shape)
  where_from = f"w {w.shape} (V = {vocab})"
  cw = _checks.as_class_weights(class_weights, vocab, FN, where_from)
  opts = _options(
    label_smoothing, z_loss, softcap, ignore_index, chunk_size, precision, reduction
  )
  opts = opts._replace(chunk=_chunk(chunk_size, _tiling.rows_of(batch_shape), vocab))
  x2 = x.reshape(math.prod(batch_shape), hidden)  # -1 is ambiguous when H = 0
  lab = labels.reshape(-1)
  omega = None if omega is None else omega.reshape(-1)
  args = (x2, w, bias, lab, mask, omega, cw, opts)
  if not _checks.static_flag(check_labels, "check_labels", FN):
    out = _linear_ce_jit(*args)
  elif _checks.is_concrete(x2, w, bias, lab, mask, omega, cw):
    out = _linear_ce_checkify(*args)  # eager: a failed check raises here
  else:
    out = _linear_ce_checkify_jit(*args)
  out = cast(jax.Array, out)  # jax types a custom_vjp's result as object
  return out if reduction != "none" else out.reshape(batch_shape)


def _arrays(x, w, labels, bias, where):
  """The array arguments, checked: x [..., H], w [H, V], integer labels of
  x's batch shape, bias [V] and a boolean where [V]."""
  x = _checks.as_floating(x, "x", FN)
  w = _checks.as_floating(w, "w", FN)
  if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
    raise ValueError(
      f"{FN}: x must be [..., H] and w [H, V], so that the logits are"
      f" x @ w; got x {x.shape} and w {w.shape}. If w is stored as"
      " [V, H] (an embedding table), pass w.T."
    )
  vocab = w.shape[1]
  batch_shape = x.shape[:-1]
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
      f"{FN}: labels must have an integer dtype (class indices); got"
      f" {labels.dtype} with shape {labels.shape}. For integer labels stored"
      " as floats use labels.astype(jnp.int32)."
    )
  try:
    fits = _checks.broadcast_shapes(labels.shape, batch_shape) == tuple(batch_shape)
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(
      f"{FN}: labels must have (or broadcast to) x's shape without its last"
      f" (feature) axis: x {x.shape} -> expected {batch_shape}, got"
      f" {labels.shape}."
    )
  if labels.shape != batch_shape:
    labels = jnp.broadcast_to(labels, batch_shape)  # as the integer-label CE
  if bias is not None:
    bias = _checks.as_floating(bias, "bias", FN)
    if bias.shape != (vocab,):
      raise ValueError(
        f"{FN}: bias must have shape [V] = ({vocab},), one per column of w"
        f" {w.shape}; got {bias.shape}."
      )
  return x, w, labels, bias, _vocabulary_mask(where, w)


def _vocabulary_mask(where, w):
  """The [V] boolean mask over the vocabulary, or None. An empty vocabulary
  is a fully masked one (masking means slicing): no label is read."""
  if where is None:
    return jnp.zeros((0,), bool) if w.shape[1] == 0 else None
  mask = jnp.asarray(where)
  if mask.dtype != jnp.bool_:
    raise TypeError(
      f"{FN}: where must be a boolean mask over the vocabulary; got dtype"
      f" {mask.dtype}. Build it with a comparison, for example"
      " where=allowed > 0."
    )
  if mask.shape != (w.shape[1],):
    raise ValueError(
      f"{FN}: where must have shape [V] = ({w.shape[1]},), one flag per class"
      f" (per column of w {w.shape}); got {mask.shape}. To drop examples,"
      " use ignore_index on their labels instead."
    )
  return mask


def _options(
  label_smoothing, z_loss, softcap, ignore_index, chunk_size, precision, reduction
):
  """The static options, checked (the chunk is filled in by the caller)."""
  if reduction not in ("none", "sum", "mean"):
    raise ValueError(
      f"{FN}: reduction must be 'none', 'sum' or 'mean'; got {reduction!r}."
      " 'mean' divides by the total weight of the examples that count, as"
      " torch's cross_entropy does with ignore_index."
    )
  del chunk_size
  return Options(
    alpha=_checks.static_fraction(label_smoothing, "label_smoothing", FN),
    z_loss=_static_float(z_loss, "z_loss", positive=False),
    softcap=None if softcap is None else _static_float(softcap, "softcap"),
    ignore_index=_checks.static_index(ignore_index, "ignore_index", FN),
    chunk=0,
    precision=cast(lax.PrecisionLike, tuple(precision))
    if isinstance(precision, list)
    else precision,
    reduction=reduction,
  )


def _weights(weights, batch_shape):
  """Per-example weights, broadcast to the labels' shape, or None."""
  if weights is None:
    return None
  omega = _checks.as_floating(weights, "weights", FN)
  try:
    ok = jnp.broadcast_shapes(omega.shape, batch_shape) == tuple(batch_shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"{FN}: weights must have the labels' shape {tuple(batch_shape)} (one"
      f" weight per example), or broadcast to it; got {omega.shape}."
    )
  return jnp.broadcast_to(omega, batch_shape)


def _static_float(value: object, name: str, *, positive: bool = True) -> float:
  """A number > 0 (or >= 0 without `positive`), fixed at trace time: a
  Python, NumPy or concrete JAX scalar."""
  rule = "> 0" if positive else ">= 0"
  value = _checks.concrete(value, name, FN)
  try:
    v = float(value)  # type: ignore[arg-type]
  except TypeError as e:
    raise TypeError(f"{FN}: {name} must be a float {rule}; got {value!r}.") from e
  if math.isnan(v) or math.isinf(v) or v < 0 or (positive and v == 0):
    hint = (
      " 1e-4 is a common choice; 0 turns it off."
      if name == "z_loss"
      else (" 30.0 is a common choice; None turns it off.")
    )
    raise ValueError(f"{FN}: {name} must be finite and {rule}; got {value!r}.{hint}")
  return v


def _chunk(chunk_size: object, n: int | None, vocab: int) -> int:
  """The vocabulary chunk: checked if given (a Python, NumPy or concrete JAX
  integer), else chosen from N and V."""
  chunk_size = _checks.concrete(chunk_size, "chunk_size", FN)
  if chunk_size is None:
    return _tiling.choose_chunk(n, vocab)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
    raise TypeError(
      f"{FN}: chunk_size must be an int or None; got"
      f" {type(chunk_size).__name__} {chunk_size!r}. A multiple of 128 such"
      " as 1024 suits most vocabularies."
    )
  if chunk_size <= 0:
    raise ValueError(
      f"{FN}: chunk_size must be positive; got {chunk_size}. Pass None to"
      " choose one from the shapes, or a multiple of 128 such as 1024."
    )
  # a symbolic V (jax.export): the chunk as given, the last one shorter
  return min(chunk_size, vocab) if isinstance(vocab, int) else chunk_size


def _linear_ce_prepared(x, w, bias, labels, where, weights, cw, opts):
  """The loss of the checked arguments, labels of any integer dtype."""
  labels, bias, where, weights, cw = aligned(x, w, labels, bias, where, weights, cw)
  codes = encode(labels, w.shape[1], opts.ignore_index, weights)
  if not isinstance(w.shape[1], int):  # a symbolic V (jax.export)
    w, bias, where, cw = _tiling.pad_vocabulary(w, bias, where, cw, opts.chunk)
  if opts.reduction != "none":
    return reduced_loss(x, w, bias, codes, where, weights, cw, opts)
  out = cast(jax.Array, per_example_loss(x, w, bias, codes, where, cw, opts))
  if weights is None:
    return out
  _, ct = compute_dtype(x, w, bias)
  return (out.astype(ct) * weights.astype(ct)).astype(out.dtype)


def _linear_ce_checkify(x, w, bias, labels, where, weights, cw, opts):
  """The loss, then checkify.check on its labels (check_labels=True)."""
  # the check comes after the custom_vjp call: see _checks.report_labels
  out = _linear_ce_prepared(x, w, bias, labels, where, weights, cw, opts)
  report_bad_labels(labels, where, weights, w.shape[1], opts.ignore_index)
  return out


# Checked arguments go through one compiled call, as in jax.nn: eager calls
# then cost one dispatch instead of one per primitive.
_linear_ce_jit = jax.jit(_linear_ce_prepared, static_argnums=(7,))
_linear_ce_checkify_jit = jax.jit(_linear_ce_checkify, static_argnums=(7,))


def clear_caches() -> None:
  """Drops the compiled entry points' traces (see _paths.record_paths)."""
  for entry in (_linear_ce_jit, _linear_ce_checkify_jit):
    entry.clear_cache()  # pyright: ignore[reportAttributeAccessIssue]
