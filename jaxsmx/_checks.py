"""Trace-time input checks shared by every public function.

Each check raises with a message that states the rule, shows what arrived and
suggests the fix. They run once per trace on static shapes and dtypes, so they
cost nothing inside a compiled function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Axis = int | Sequence[int] | None


def concrete(value: object, name: str, fn: str) -> object:
  """A static setting as a Python value, whatever a config system hands over.

  NumPy scalars and concrete JAX scalars become Python scalars (arrays become
  lists) by ``tolist``; a traced value is refused, as it cannot choose the
  computation at trace time.
  """
  if value is None or isinstance(value, (bool, int, float, str)):
    return value  # the common case, at no cost
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"{fn}: {name} must be a concrete value, not a traced array: it is"
      " fixed at trace time. Pass it as a static argument (for example with"
      " jax.jit(..., static_argnames=...)) or close over it."
    )
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return value.tolist()
  return value


def canonical_axes(axis: Axis, ndim: int, fn: str) -> tuple[int, ...]:
  """Returns `axis` as a tuple of distinct non-negative ints, in the given order.

  `None` means every axis, as in `jax.nn.softmax`. NumPy and concrete JAX
  integers count as ints.
  """
  axis = concrete(axis, "axis", fn)  # pyright: ignore[reportAssignmentType]
  if axis is None:
    return tuple(range(ndim))
  if isinstance(axis, (int, np.integer)):
    given: tuple = (axis,)
  elif isinstance(axis, Sequence) and not isinstance(axis, str):
    given = tuple(axis)
  else:
    raise TypeError(
      f"{fn}: axis must be an int, a tuple of ints or None; got"
      f" {type(axis).__name__} {axis!r}."
    )
  out = []
  for a in given:
    a = concrete(a, "axis", fn)
    if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
      raise TypeError(
        f"{fn}: every axis must be an int; got {type(a).__name__} {a!r} in"
        f" axis={axis!r}."
      )
    if not -ndim <= a < ndim:
      raise ValueError(
        f"{fn}: axis {a} is out of range for an input of rank {ndim}; valid"
        f" axes are {-ndim}..{ndim - 1}. Check that the class axis exists,"
        " for example that logits are not missing their batch or class"
        " dimension."
      )
    out.append(int(a) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(
      f"{fn}: axis {axis!r} names the same axis twice (as {tuple(out)} for"
      f" rank {ndim}). Name each class axis once."
    )
  if not out:
    raise ValueError(f"{fn}: axis must name at least one axis; got {axis!r}.")
  return tuple(out)


def as_array(x: jax.typing.ArrayLike) -> jax.Array:
  """jnp.asarray, without its cost (microseconds) for an array already."""
  return x if isinstance(x, jax.Array) else jnp.asarray(x)


@functools.cache
def dtype_kind(dtype) -> str:
  """'floating', 'complex', 'integer', 'bool' or 'other' (cached: an eager call
  pays for jnp.issubdtype once per dtype, not once per call)."""
  dtype = np.dtype(dtype)
  for kind, parent in [
    ("floating", jnp.floating),
    ("complex", jnp.complexfloating),
    ("integer", jnp.integer),
    ("bool", jnp.bool_),
  ]:
    if jnp.issubdtype(dtype, parent):
      return kind
  return "other"


def broadcast_shapes(*shapes: tuple) -> tuple:
  """jnp.broadcast_shapes, cached for concrete shapes."""
  try:
    return _broadcast_cached(*shapes)
  except TypeError:  # an unhashable dimension
    return tuple(jnp.broadcast_shapes(*shapes))


@functools.lru_cache(maxsize=4096)
def _broadcast_cached(*shapes: tuple) -> tuple:
  return tuple(jnp.broadcast_shapes(*shapes))


def as_floating(x: jax.typing.ArrayLike, name: str, fn: str) -> jax.Array:
  """Converts to an array and requires a floating dtype."""
  x = as_array(x)
  if dtype_kind(x.dtype) != "floating":
    raise TypeError(
      f"{fn}: {name} must have a floating dtype; got {x.dtype} with shape"
      f" {x.shape}. Convert it first, for example {name}.astype(jnp.float32)."
    )
  return x


@functools.cache
def inexact_dtype(dtype) -> np.dtype:
  """The floating dtype that jax.nn computes an input of `dtype` in.

  Floating dtypes stay; booleans and integers of up to 32 bits become float32,
  64-bit integers float64 (float32 without x64), with or without x64: JAX's
  own rule (``jnp.promote_dtypes_inexact``), which jax.nn.softmax applies.
  """
  dtype = np.dtype(dtype)
  if dtype_kind(dtype) not in ("integer", "bool"):
    return dtype
  wide = dtype.itemsize >= 8
  return jax.dtypes.canonicalize_dtype(np.float64 if wide else np.float32)


def as_inexact(x: jax.typing.ArrayLike, name: str, fn: str) -> jax.Array:
  """Converts to an array of a floating dtype, as jax.nn does.

  One rule for every input that holds logits or probabilities: floating
  arrays stay as they are, integers and booleans are converted by
  `inexact_dtype`, anything else (complex) is refused.
  """
  x = as_array(x)
  kind = dtype_kind(x.dtype)
  if kind in ("integer", "bool"):
    return x.astype(inexact_dtype(x.dtype))
  if kind != "floating":
    raise TypeError(
      f"{fn}: {name} must be real (floating, integer or boolean); got"
      f" {x.dtype} with shape {x.shape}. Pass the real part or the magnitude."
    )
  return x


def as_integer_labels(
  labels: jax.typing.ArrayLike,
  expected_shape: tuple[int, ...],
  fn: str,
  logits_shape: tuple[int, ...],
  axes: tuple[int, ...],
) -> jax.Array:
  """Requires integer labels of the logits' shape without the class axes."""
  labels = as_array(labels)
  if dtype_kind(labels.dtype) != "integer":
    raise TypeError(
      f"{fn}: labels must have an integer dtype (class indices); got"
      f" {labels.dtype} with shape {labels.shape}. For probabilities or"
      " one-hot labels use softmax_cross_entropy; for integer labels stored"
      " as floats use labels.astype(jnp.int32)."
    )
  if not _broadcasts_to(labels.shape, expected_shape) or (
    labels.shape == logits_shape and labels.ndim > len(expected_shape)
  ):
    hint = ""
    if labels.shape == logits_shape:
      hint = " Did you pass one-hot labels? Use softmax_cross_entropy for those."
    raise ValueError(
      f"{fn}: labels must have (or broadcast to) the logits' shape without"
      f" the class axis: logits {logits_shape}, axis"
      f" {axes if len(axes) != 1 else axes[0]} -> expected {expected_shape}, got"
      f" {labels.shape}.{hint}"
    )
  return labels


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
  try:
    return broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
  except ValueError:
    return False


def broadcast_pair(
  a: jax.Array, b: jax.Array, a_name: str, b_name: str, fn: str
) -> tuple[int, ...]:
  """The shape that `a` and `b` broadcast to (numpy's rule, as optax)."""
  try:
    return broadcast_shapes(tuple(a.shape), tuple(b.shape))
  except ValueError:
    hint = (
      " For integer class labels use softmax_cross_entropy_with_integer_labels."
      if fn.startswith("softmax_cross_entropy")
      else ""
    )
    raise ValueError(
      f"{fn}: {a_name} and {b_name} must broadcast to one shape: {a_name}"
      f" {a.shape}, {b_name} {b.shape}.{hint} Reshape one of them, or add the"
      " missing axes with jnp.expand_dims."
    ) from None


def one_class_axis(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """x with the class axes moved last, in the order given, as one axis.

  A tuple axis is computed on this layout, so that it gives to the last bit
  what the same data on one flattened axis gives (the flat class index is C
  order over the axes as given). The losses call it before their compiled
  call: an eager call then hands XLA the flattened array itself, not a
  transpose that XLA could fuse into the reductions and sum in another order.
  """
  ndim, k = x.ndim, len(axes)
  x = jnp.moveaxis(x, axes, tuple(range(ndim - k, ndim)))
  # the class size, not -1: -1 is ambiguous for an empty batch
  return x.reshape((*x.shape[: ndim - k], math.prod(x.shape[ndim - k :])))


def as_mask(
  where: jax.typing.ArrayLike | None,
  shape: tuple[int, ...],
  axes: tuple[int, ...],
  fn: str,
  *,
  per_slice: bool = True,
) -> jax.Array | None:
  """Checks a `where` mask and gives it the input's rank.

  A mask may have the input's shape (or broadcast to it). With `per_slice`, as
  in optax's losses, a mask of lower rank than the input is one flag per
  example: it broadcasts to the shape without the class axes and selects
  whole slices.
  """
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(
      f"{fn}: where must be a boolean mask; got dtype {where.dtype}. Build it"
      " with a comparison, for example where=mask > 0."
    )
  ndim = len(shape)
  given = where.shape
  if per_slice and where.ndim < ndim:
    batch = tuple(d for i, d in enumerate(shape) if i not in axes)
    try:
      fits = jnp.broadcast_shapes(where.shape, batch) == batch
    except ValueError:
      fits = False
    if fits:
      if where.shape != batch:
        where = jnp.broadcast_to(where, batch)
      where = jnp.expand_dims(where, axes)
  try:
    ok = jnp.broadcast_shapes(where.shape, tuple(shape)) == tuple(shape)
  except ValueError:
    ok = False
  if per_slice and where.ndim < ndim:
    ok = False  # lower rank, but not broadcastable to one flag per example
  if not ok:
    batch = tuple(d for i, d in enumerate(shape) if i not in axes)
    alt = f", or have the shape without the class axes {batch}" if per_slice else ""
    hint = ""
    if per_slice and len(given) < ndim:
      hint = (
        f" A mask of rank {len(given)} is read as one flag per example; to"
        " mask classes give it the input's rank, for example"
        f" where[None] of shape {(1,) * (ndim - len(given)) + given}."
      )
    raise ValueError(
      f"{fn}: where must broadcast to the input's shape {tuple(shape)}{alt};"
      f" got {given}.{hint} Reshape the mask, or add the missing axes with"
      " jnp.expand_dims."
    )
  return where


def static_fraction(value: object, name: str, fn: str) -> float:
  """Requires a number in [0, 1] (it selects the computation): a Python, NumPy
  or concrete JAX scalar."""
  value = concrete(value, name, fn)
  try:
    v = float(value)  # type: ignore[arg-type]
  except TypeError as e:
    raise TypeError(f"{fn}: {name} must be a float in [0, 1]; got {value!r}.") from e
  if not (0.0 <= v <= 1.0) or math.isnan(v):
    raise ValueError(
      f"{fn}: {name} must lie in [0, 1]; got {value!r}. 0 turns it off, 0.1"
      " is a common choice."
    )
  return v


def compute_dtype(dtype) -> np.dtype:
  """The dtype the arithmetic runs in: float32 for 16-bit floats."""
  dtype = jnp.dtype(dtype)
  if jnp.finfo(dtype).bits < 32:
    return jnp.dtype(jnp.float32)
  return dtype


def static_index(value: object, name: str, fn: str) -> int | None:
  """Requires None or an int (a label value fixed at trace time): a Python,
  NumPy or concrete JAX integer."""
  value = concrete(value, name, fn)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(
      f"{fn}: {name} must be an int or None; got"
      f" {type(value).__name__} {value!r}. The usual padding value is -100."
    )
  return int(value)


def static_flag(value: object, name: str, fn: str) -> bool:
  """Requires a bool (it selects the computation at trace time): a Python,
  NumPy or concrete JAX boolean."""
  value = concrete(value, name, fn)
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(
      f"{fn}: {name} must be a bool, True or False; got"
      f" {type(value).__name__} {value!r}. It is fixed at trace time."
    )
  return bool(value)


def is_concrete(*xs: object) -> bool:
  """True when no argument is a tracer: the call is eager, not transformed."""
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def label_index(
  labels: jax.Array, num_classes: int, ignore_index: int | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (index, in_range, ignored) for integer labels of any dtype.

  index: int32, the label where it lies in [0, num_classes), else 0; it never
    wraps, whatever the labels' dtype (uint8 labels with 300 classes, uint64
    labels under x64). in_range: 0 <= label < num_classes. ignored: label ==
    ignore_index (False where ignore_index is not representable in the dtype).

  Every comparison is made in the labels' own dtype, against bounds that it
  can represent, so none of them promotes to float or overflows. A symbolic
  class count (jax.export) is compared as a value, in a dtype that holds it
  and every label.
  """
  info = jnp.iinfo(labels.dtype)
  in_range = jnp.ones(labels.shape, bool) if info.min >= 0 else labels >= 0
  if not isinstance(num_classes, (int, np.integer)):
    count = jnp.asarray(num_classes)  # int32, or int64 under x64
    wide = max(labels.dtype, count.dtype, key=lambda d: d.itemsize)
    in_range = in_range & (labels.astype(wide) < count.astype(wide))
  elif num_classes <= info.max:
    in_range = in_range & (labels < np.asarray(num_classes, labels.dtype))
  if ignore_index is None or not info.min <= ignore_index <= info.max:
    ignored = jnp.zeros(labels.shape, bool)
  else:
    ignored = labels == np.asarray(ignore_index, labels.dtype)
  index = jnp.where(in_range, labels, np.zeros((), labels.dtype)).astype(jnp.int32)
  return index, in_range, ignored


def report_labels(
  fn: str,
  labels: jax.Array,
  num_classes: int,
  ignore_index: int | None,
  invalid: jax.Array,
  masked_out: jax.Array | None,
) -> None:
  """Reports bad integer labels with checkify.check; for check_labels=True only.

  `invalid` flags labels outside [0, num_classes) that are not ignore_index;
  `masked_out` flags labels whose class `where` masks out (None without a
  mask). A failed check raises at once in an eager call; in a traced one it
  must be functionalized by checkify.checkify (JAX says so at trace time).

  Call it after the custom_vjp loss in the same trace, not before: on jax
  0.10, checkify threads a live error into any custom_vjp call that follows a
  check inside a jit, and jax.grad of such a checkified function fails
  ("foreach() argument 2 is shorter than argument 1").
  """
  ignore = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
  checkify.check(
    ~jnp.any(invalid),
    f"{fn}: labels must lie in [0, {num_classes}){ignore}; got labels {{}}."
    " Fix the labels, or pass ignore_index for padding.",
    labels,
  )
  if masked_out is not None:
    checkify.check(
      ~jnp.any(masked_out),
      f"{fn}: some labels name a class that `where` masks out, so those"
      " examples are dropped (loss 0); labels {}. Unmask the target classes,"
      " or set those labels to ignore_index.",
      labels,
    )


def as_class_weights(
  class_weights: jax.typing.ArrayLike | None,
  num_classes: int,
  fn: str,
  where_from: str,
) -> jax.Array | None:
  """Checks a `class_weights` vector: one real weight per class, [C].

  Integer and boolean weights become floating as jax.nn converts inputs
  (:func:`inexact_dtype`). `where_from` says where C comes from, for the
  message (for example "logits (32, 10), axis -1").
  """
  if class_weights is None:
    return None
  cw = as_inexact(class_weights, "class_weights", fn)
  if cw.shape != (num_classes,):
    raise ValueError(
      f"{fn}: class_weights must have one weight per class, shape"
      f" (num_classes,) = ({num_classes},) for {where_from}; got shape"
      f" {cw.shape}. Pass a vector such as jnp.ones({num_classes}) with the"
      " weight of class k at index k."
    )
  return cw
