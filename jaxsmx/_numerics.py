r"""Numerics shared by every function: one exponential per element, and the edges.

A slice of logits :math:`z` is normalised with its maximum :math:`m` as the
shift: :math:`e = e^{z - m}` is formed once per element, softmax is
:math:`e / \sum e`, and :math:`\log\mathrm{softmax}(z) = (z - m) - \log\sum_k
e^{z_k - m}`. Keeping the shift and the log-norm apart, rather than adding them
into the logsumexp, keeps log-probabilities exact for logits near the float
range: with :math:`z = (10^{30}, 10^{30})` the logsumexp rounds to
:math:`10^{30}`, but :math:`(z - m) - \log 2` does not.

The edge rules, used everywhere:

* masked entries count as :math:`-\infty`;
* a slice with no finite mass (all :math:`-\infty`, fully masked, or empty)
  has the lowest finite float as its shift and log-norm :math:`-\infty`: its
  logsumexp is :math:`-\infty` and its probabilities are 0;
* a :math:`+\infty` or NaN entry makes the slice's shift, and so everything
  computed from it, NaN (logsumexp alone gives :math:`+\infty` for
  :math:`+\infty`, as jax.nn does).

The calling conventions, also shared: class axes are moved to one flattened
last axis before any rule runs (a tuple ``axis`` then gives what the data
moved to one axis gives, to the last bit); inputs are broadcast and cast to
the compute dtype outside the rules, so that each gradient is summed and
rounded once, to its input's dtype; and inside a user's ``shard_map`` the
differentiable inputs of a rule are given one varying type, so that a
cotangent is summed over the mesh axes along which its input does not vary.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType

from jaxsmx import _checks


def upcast(x: jax.Array) -> jax.Array:
  """The input in its compute dtype: float32 for 16-bit floats."""
  return x.astype(_checks.compute_dtype(x.dtype))


def in_compute_dtype(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  """The arrays in one compute dtype, the widest of theirs (float32 for
  16-bit inputs), converted explicitly: no implicit promotion."""
  dtypes = [_checks.compute_dtype(a.dtype) for a in arrays]
  wide = max(dtypes, key=lambda d: d.itemsize)
  return tuple(a.astype(wide) for a in arrays)


def masked(x: jax.Array, where: jax.Array | None) -> jax.Array:
  """Replaces masked-out entries by -inf, so that they carry no mass."""
  return x if where is None else jnp.where(where, x, -jnp.inf)


def exp_normalizer(
  z: jax.Array, axes: tuple[int, ...]
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (e, s, shift) for already masked logits: e = exp(z - shift).

  s = sum(e) and shift are keepdims. One exp per element: every rule derives
  what else it needs from e by division (softmax = e / s) and from s by one
  log per slice, so that XLA computes, and materialises, exp once.
  """
  # The lowest finite float as the initial value: a slice with no finite mass
  # (all -inf, masked, or of size zero) gets a finite shift, so that
  # exp(z - shift) is 0 there, not exp(-inf + inf) = NaN. No select between
  # the max and the exp lets XLA fuse the two into one pass.
  shift = jnp.max(z, axes, keepdims=True, initial=jnp.finfo(z.dtype).min)
  e = jnp.exp(z - shift)
  return e, jnp.sum(e, axes, keepdims=True), shift


def log_of_sum(s: jax.Array) -> jax.Array:
  """log(s), -inf for an empty slice (s = 0).

  log(0) is taken as log(1) behind a where, so that differentiating this
  (second-order rules do) gives 0, not 0 * inf = NaN.
  """
  empty = s == 0.0
  return jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, 1.0, s)))


def log_norm_of(
  z: jax.Array,
  e: jax.Array,
  s: jax.Array,
  shift: jax.Array,
  axes: tuple[int, ...],
  *,
  small_losses_exact: bool,
) -> jax.Array:
  """log(s), optionally exact for slices that are nearly one-hot.

  When one logit dominates, s = 1 + d with d below float32's epsilon, and
  log(s) rounds d away: a confident, correct example's loss (about d) loses
  its relative accuracy. With `small_losses_exact`, a slice with a single
  maximum takes log1p of the sum of the other terms instead. That costs one
  more fused reduction, so jaxsmx spends it where the caller's dtype can see
  the difference relative to the loss: 16-bit inputs, whose losses promise
  2 eps of their dtype.
  """
  if not small_losses_exact:
    return log_of_sum(s)
  top = z == shift
  rest = jnp.sum(jnp.where(top, 0.0, e), axes, keepdims=True)
  single = jnp.sum(top.astype(e.dtype), axes, keepdims=True) == 1
  return jnp.where(single, jnp.log1p(jnp.where(single, rest, 0.0)), log_of_sum(s))


def ratio(e: jax.Array, s: jax.Array) -> jax.Array:
  """softmax as e / s: 0 throughout an empty slice."""
  return e / jnp.where(s == 0.0, 1.0, s)


def is_empty(log_norm: jax.Array) -> jax.Array:
  """True for slices without finite mass (all -inf or fully masked)."""
  return log_norm == -jnp.inf


def log_probs(z: jax.Array, shift: jax.Array, log_norm: jax.Array) -> jax.Array:
  """log_softmax(z): -inf at masked entries and throughout empty slices."""
  return (z - shift) - jnp.where(is_empty(log_norm), 0.0, log_norm)


def times_cotangent(g: jax.Array, d: jax.Array) -> jax.Array:
  """g * d, but 0 where g is 0.

  Some derivatives are infinite at the edge of the domain (d/dp of -p log p at
  p = 0). A slice that does not reach the output has g = 0 there, and its
  gradient must be 0, not 0 * inf = NaN. A NaN g still propagates.

  Only the non-finite d are replaced (by 0, where g = 0), before the product:
  the result stays g * d, linear in g, so its derivative with respect to g is
  d wherever d is finite (vjp-of-vjp and second-order rules rely on that), and
  differentiating it never meets 0 * inf.
  """
  return g * jnp.where((g == 0) & ~jnp.isfinite(d), 0.0, d)


# ---------------------------------------------------------------------------
# calling conventions: one compiled call, flattened class axes, shard_map


def static_axis(axis, fn: str):
  """`axis` in a hashable form, so that it can be a static argument of jit:
  NumPy and concrete JAX integers as ints, a list or an array as a tuple."""
  if axis is None or type(axis) is int:
    return axis  # the common case, at no cost
  axis = _checks.concrete(axis, "axis", fn)
  if isinstance(axis, (list, tuple)):
    return tuple(_checks.concrete(a, "axis", fn) for a in axis)
  return axis


def as_array(x):
  """Python lists and tuples as arrays; arrays (and tracers) as they are.

  jax.jit would read a list as a pytree of scalars; everything else it takes.
  """
  return jnp.asarray(x) if isinstance(x, (list, tuple)) else x


def _to_last(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """x with the class axes moved to the end, in the order given, as one axis.

  Every function reduces over that one axis, so that a tuple `axis` gives, to
  the last bit, what the same data moved to one flattened axis gives. An empty
  `axes` gives a class axis of size 1 (nothing is reduced).
  """
  n, k = x.ndim, len(axes)
  x = jnp.moveaxis(x, axes, tuple(range(n - k, n)))
  batch = x.shape[: n - k]
  return x.reshape((*batch, math.prod(x.shape[n - k :])))


def from_last(y: jax.Array, shape: tuple[int, ...], axes: tuple[int, ...]) -> jax.Array:
  """The inverse of `_to_last`, for a result of the input's `shape`."""
  n, k = len(shape), len(axes)
  moved = [d for i, d in enumerate(shape) if i not in axes] + [shape[a] for a in axes]
  y = y.reshape(moved)
  return jnp.moveaxis(y, tuple(range(n - k, n)), axes)


def batch_result(
  y: jax.Array, shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool = False
) -> jax.Array:
  """A per-slice result of `_to_last` ([..., 1]) in the shape without `axes`."""
  batch = tuple(d for i, d in enumerate(shape) if i not in axes)
  y = y.reshape(batch)
  return jnp.expand_dims(y, tuple(sorted(axes))) if keepdims else y


def varying_axes(a) -> frozenset:
  """The manual mesh axes (inside shard_map) over which `a` varies."""
  aval = jax.typeof(a)
  manual = getattr(aval, "manual_axis_type", None)  # "vma" before JAX 0.10
  return frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", ()))


def same_varying_axes(*arrays):
  """The arrays of one type, as a custom_vjp rule takes them, so that each
  cotangent it forms matches its input's type:

  * inside a user's shard_map, each marked as varying over every manual mesh
    axis that any of them varies over. The transpose of this cast is a psum:
    the cotangent of an input that is invariant along a mesh axis is summed
    over that axis, as for JAX's own implicit broadcasting;
  * under explicit sharding, those of the first array's shape resharded to
    its sharding (a target replicated or split over other axes than the
    logits). The transpose of the reshard brings each cotangent back to its
    input's sharding.

  A no-op otherwise. None entries pass.
  """
  arrays = _same_sharding(arrays)
  present = [a for a in arrays if a is not None]
  axes = frozenset().union(*(varying_axes(a) for a in present))
  if not axes:
    return arrays
  out = []
  for a in arrays:
    missing = () if a is None else tuple(sorted(axes - varying_axes(a)))
    out.append(lax.pcast(a, missing, to="varying") if missing else a)
  return tuple(out)


def explicit_sharding(a):
  """a's NamedSharding if its type carries one over a mesh with explicit axes
  (under jax.set_mesh), else None."""
  sharding = getattr(jax.typeof(a), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty or AxisType.Explicit not in mesh.axis_types:
    return None
  return sharding


def _full_spec(spec, ndim: int) -> tuple:
  return tuple(spec) + (None,) * (ndim - len(spec))


def _same_sharding(arrays):
  """Under explicit sharding, the arrays of the first one's shape with its
  sharding (see same_varying_axes)."""
  first = arrays[0] if arrays else None
  if first is None or (target := explicit_sharding(first)) is None:
    return arrays
  shape, spec = first.shape, _full_spec(target.spec, first.ndim)
  out = []
  for a in arrays:
    if a is not None and a is not first and a.shape == shape:
      own = explicit_sharding(a)
      if own is None or _full_spec(own.spec, a.ndim) != spec:
        a = jax.sharding.reshard(a, jax.sharding.PartitionSpec(*spec))
    out.append(a)
  return tuple(out)


def broadcast_shape(fn: str, **arrays) -> tuple[int, ...]:
  """The NumPy broadcast shape of the named arrays (None entries skipped)."""
  shapes = {k: np.shape(v) for k, v in arrays.items() if v is not None}
  try:
    return tuple(jnp.broadcast_shapes(*shapes.values()))
  except ValueError:
    given = ", ".join(f"{k} {v}" for k, v in shapes.items())
    raise ValueError(
      f"{fn}: the inputs must broadcast against each other (NumPy rules);"
      f" got {given}. Add the missing axes with jnp.expand_dims, or reshape."
    ) from None


def _elementwise_mask(
  fn: str, where, shape: tuple[int, ...], axes: tuple[int, ...]
) -> jax.Array | None:
  """A boolean `where` that broadcasts to `shape` as NumPy broadcasts (its
  trailing axes align with the input's), as in ``np.sum(x, where=m)``."""
  if where is None:
    return None
  where = _checks.as_mask(where, np.shape(where), (), fn, per_slice=False)
  assert where is not None  # as_mask returns None only for None
  try:
    ok = jnp.broadcast_shapes(where.shape, shape) == tuple(shape)
  except ValueError:
    ok = False
  if not ok:
    batch = tuple(d for i, d in enumerate(shape) if i not in axes)
    hint = ""
    if where.shape == batch and batch:
      hint = (
        " A mask of the shape without the class axes does not select"
        " examples here (it broadcasts from the trailing axes, as in NumPy);"
        f" to mask whole examples pass jnp.expand_dims(where, {tuple(sorted(axes))})."
      )
    raise ValueError(
      f"{fn}: where must broadcast to the input's shape {tuple(shape)} (NumPy"
      f" rules); got {where.shape}.{hint}"
    )
  return where


def flat_inputs(shape, axes, compute, *arrays):
  """Each array (None passes) in the compute dtype, broadcast to `shape`, its
  class axes flattened to the last one (`_to_last`), all of one varying type
  under shard_map. Differentiating through this rounds each gradient once, to
  its input's dtype, after its broadcast axes are summed in `compute`."""
  out = []
  for x in arrays:
    if x is not None:
      x = x.astype(compute) if jnp.issubdtype(x.dtype, jnp.floating) else x
      x = _to_last(jnp.broadcast_to(x, shape), axes)
    out.append(x)
  return same_varying_axes(*out)


# Class axes and counts, shared by the losses


def flat_class_axes(logits, labels, where, axes):
  """Tuple class axes moved last and flattened into one (see _checks.one_class_axis).

  `labels` is flattened too when it has the logits' shape (soft labels).
  """
  if where is not None:
    where = _checks.one_class_axis(jnp.broadcast_to(where, logits.shape), axes)
  if labels.shape == logits.shape:
    labels = _checks.one_class_axis(labels, axes)
  logits = _checks.one_class_axis(logits, axes)
  return logits, labels, where, (logits.ndim - 1,)


def num_classes(shape, axes, where, dtype) -> jax.Array | int:
  """C, or the number of unmasked classes per slice (at least 1), in `dtype`
  (a Python int needs no conversion: it is weakly typed)."""
  if where is None:
    count = math.prod(shape[a] for a in axes)
    # a symbolic count (jax.export) as a value
    return count if isinstance(count, int) else jnp.asarray(count, dtype)
  count = jnp.sum(jnp.broadcast_to(where, shape), axes, keepdims=True, dtype=dtype)
  return jnp.maximum(count, 1)


# Inputs and masks of the elementwise families (entropy, cross-entropy, KL)


def prepare_inputs(fn, axis, where, **arrays):
  """Checks the floating inputs, broadcasts them and the mask (NumPy rules)
  and flattens their class axes to one last axis, in the compute dtype.

  Returns (flat arrays..., flat mask, finish), where finish turns a per-slice
  result [..., 1] into the broadcast shape without the class axes, in the
  inputs' promoted dtype.
  """
  xs = [_checks.as_inexact(x, name, fn) for name, x in arrays.items()]
  shape = broadcast_shape(fn, **dict(zip(arrays, xs, strict=True)))
  axes = _checks.canonical_axes(axis, len(shape), fn)
  mask = _elementwise_mask(fn, where, shape, axes)
  dtype = jnp.result_type(*xs)
  flat = flat_inputs(shape, axes, _checks.compute_dtype(dtype), *xs, mask)

  def finish(h):
    return batch_result(h, shape, axes).astype(dtype)

  return (*flat, finish)


def nan_or_zero(x: jax.Array) -> jax.Array:
  """0, or NaN where x is NaN: the value of a 0-weighted term in x."""
  return jnp.where(jnp.isnan(x), x, 0.0)


def fill_masked(mask: jax.Array | None, x: jax.Array, value: float) -> jax.Array:
  """x with its masked-out entries set to a harmless `value`.

  Rules fill them before computing: masked entries may hold anything (0, NaN),
  and a where after the arithmetic alone would form a NaN (0 * inf) on the
  way, which jax.debug_nans and checkify.float_checks report, and which the
  second-order rules would differentiate.
  """
  return x if mask is None else jnp.where(mask, x, value)


def keep_unmasked(mask: jax.Array | None, values: jax.Array) -> jax.Array:
  """Zeroes the masked-out entries of an elementwise term or gradient."""
  return values if mask is None else jnp.where(mask, values, 0.0)


def class_sum(x: jax.Array) -> jax.Array:
  return jnp.sum(x, -1, keepdims=True)
