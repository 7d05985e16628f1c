"""Sharding: every device streams over its own columns of ``w``.

A chunk loop over a vocabulary that is split across devices cannot slice
``w`` at a traced offset without XLA gathering ``w`` (and replicating ``dw``)
onto every device. So a kernel runs on one device's block (its rows of ``x``,
its columns of ``w``, at a column offset), and only its per-row statistics or
partial gradients cross devices:

* explicit sharding (the shardings are in the arrays' types): ``jax.shard_map``;
* automatic sharding (XLA propagates them): ``custom_partitioning``, whose
  callback receives the operands' shardings when XLA partitions the program;
* one device: the plain loop, which XLA fuses with its callers.

A kernel is described by a :class:`Kernel`: its loop on one block, the
sharding factors of its results, and how the blocks' results combine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsmx._numerics import explicit_sharding, varying_axes


class Layout(NamedTuple):
  """Mesh axes that split the rows of x and the columns of w (disjoint)."""

  rows: tuple[str, ...]
  vocab: tuple[str, ...]


class Kernel(NamedTuple):
  """A loop over the vocabulary on one device's block, and its collectives.

  local(x, w, *per_row, bias, where, class_weights, opts=, offset=) runs
  the loop over the columns of w (the classes [offset, offset + V) of the
  labels); results(present) names each result's dimensions ("n" rows, "h"
  features, "v" vocabulary), given which of the optional column operands
  (bias, where, class_weights) are present; combine(out, layout) merges the
  blocks' results over the layout's axes. Operands are x "n h", w "h v", the
  per-row arrays "n", and bias, where, class_weights "v" when present.
  """

  name: str
  local: Callable
  results: Callable[[tuple[bool, ...]], tuple[str, ...]]
  combine: Callable


def run(kernel: Kernel, opts, args, cols) -> tuple:
  """kernel over all rows and columns, on however many devices; results as
  named by kernel.results (an absent bias has no result)."""
  present = tuple(c is not None for c in cols)
  arrays = tuple(args) + tuple(c for c in cols if c is not None)
  explicit = _explicit_layout(args[0], args[1])
  if explicit is None and jax.device_count() == 1:
    return _local(kernel, opts, Layout((), ()), present)(*arrays)
  if explicit is None:
    return _partitioned(kernel, opts, len(args), present)(*arrays)
  mesh, layout = explicit
  specs = _operand_specs(layout, len(args), present)
  arrays = tuple(_reshard(a, s) for a, s in zip(arrays, specs, strict=True))
  return jax.shard_map(
    _local(kernel, opts, layout, present),
    mesh=mesh,
    in_specs=specs,
    out_specs=_result_specs(kernel, layout, present),
    check_vma=False,
  )(*arrays)


def _local(kernel: Kernel, opts, layout: Layout, present):
  """kernel.local on one device's block, then the collectives."""

  def block(*arrays):
    rest = list(arrays)
    cols = [rest.pop() if p else None for p in reversed(present)][::-1]
    offset = 0
    if layout.vocab:
      offset = lax.axis_index(layout.vocab) * rest[1].shape[1]
    out = kernel.local(*rest, *cols, opts=opts, offset=offset)
    return kernel.combine(out, layout)

  return block


def _names(spec, dim: int) -> tuple[str, ...]:
  entry = spec[dim] if len(spec) > dim else None
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _layout(x_spec, w_spec) -> Layout:
  rows = _names(x_spec, 0)
  return Layout(rows, tuple(a for a in _names(w_spec, 1) if a not in rows))


def _entry(axes: tuple[str, ...]):
  return None if not axes else axes[0] if len(axes) == 1 else axes


def _spec(factors: str, layout: Layout) -> P:
  by = {"n": _entry(layout.rows), "h": None, "v": _entry(layout.vocab)}
  return P(*(by[f] for f in factors.split()))


def _operand_factors(n_args: int, present) -> list[str]:
  return ["n h", "h v"] + ["n"] * (n_args - 2) + ["v"] * sum(present)


def _operand_specs(layout: Layout, n_args: int, present):
  return tuple(_spec(f, layout) for f in _operand_factors(n_args, present))


def _result_specs(kernel: Kernel, layout: Layout, present):
  return tuple(_spec(f, layout) for f in kernel.results(present))


def _rule(kernel: Kernel, n_args: int, present) -> str:
  """The Shardy rule: n rows, h features, v vocabulary."""
  operands = ", ".join(_operand_factors(n_args, present))
  return operands + " -> " + ", ".join(kernel.results(present))


def explicit_spec(a):
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
  x_spec, w_spec = explicit_spec(x), explicit_spec(w)
  if x_spec is None and w_spec is None:
    return None
  layout = _layout(x_spec or P(), w_spec or P())
  if not layout.rows and not layout.vocab:
    return None
  return jax.typeof(x if x_spec is not None else w).sharding.mesh, layout


def is_distributed(x, w, *others) -> bool:
  """True on several devices, under explicit sharding or inside shard_map."""
  if jax.device_count() > 1 or _explicit_layout(x, w) is not None:
    return True
  return any(varying_axes(a) for a in (x, w, *others) if a is not None)


def _reshard(a, spec):
  """a resharded to `spec` (explicit sharding), if it is not already."""
  current = explicit_sharding(a)
  full = lambda s: tuple(s) + (None,) * (a.ndim - len(s))
  if current is not None and full(current.spec) == full(spec):
    return a
  return jax.sharding.reshard(a, spec)


def aligned(x, w, labels, bias, where, weights, cw=None):
  """Under explicit sharding, the per-row arrays (labels, weights) split as
  the rows of x, and the per-class ones (bias, where, the class weights cw)
  as the columns of w, whatever their own shardings (replicated, or split
  over other axes). The transpose of each reshard brings its cotangent back
  to its own sharding."""
  xs, ws = explicit_sharding(x), explicit_sharding(w)
  if xs is None and ws is None:
    return labels, bias, where, weights, cw
  first = lambda s, d: (*tuple(s), None, None)[d] if s is not None else None
  rows = P(first(xs.spec if xs else None, 0))
  cols = P(first(ws.spec if ws else None, 1))
  move = lambda a, spec: None if a is None else _reshard(a, spec)
  return (
    move(labels, rows),
    move(bias, cols),
    move(where, cols),
    move(weights, rows),
    move(cw, cols),
  )


def like(cotangent, primal):
  """The cotangent typed like its primal: summed over the manual mesh axes
  (inside shard_map) over which only the cotangent varies, as the transpose of
  the implicit broadcast of an invariant input, and sharded like the primal
  (explicit sharding)."""
  if primal is None:
    return cotangent
  extra = varying_axes(cotangent) - varying_axes(primal)
  if extra:
    cotangent = lax.psum(cotangent, tuple(sorted(extra)))
  target = explicit_sharding(primal)  # replicated ones included
  return cotangent if target is None else _reshard(cotangent, target.spec)


def varying(carry, *arrays):
  """A loop's initial carry, marked as varying over the manual mesh axes
  (inside shard_map) that the inputs vary over, so that the carry keeps its
  type through the loop."""
  axes = set().union(*(varying_axes(a) for a in arrays if a is not None))
  if not axes:
    return carry
  return jax.tree.map(lambda c: lax.pcast(c, tuple(sorted(axes)), to="varying"), carry)


@functools.cache
def _partitioned(kernel: Kernel, opts, n_args: int, present):
  """kernel as one op that XLA's partitioner hands to us with its operands'
  shardings; batched and differentiated as the plain loop."""
  plain = _local(kernel, opts, Layout((), ()), present)

  def layout_of(arg_shapes):
    return _layout(*[getattr(a.sharding, "spec", P()) for a in arg_shapes[:2]])

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    layout = layout_of(arg_shapes)
    named = lambda specs: tuple(NamedSharding(mesh, s) for s in specs)
    return (
      mesh,
      _local(kernel, opts, layout, present),
      named(_result_specs(kernel, layout, present)),
      named(_operand_specs(layout, n_args, present)),
    )

  def infer(mesh, arg_shapes, result_shape):
    del result_shape
    specs = _result_specs(kernel, layout_of(arg_shapes), present)
    return tuple(NamedSharding(mesh, s) for s in specs)

  op = custom_partitioning(plain)
  op.def_partition(
    partition,
    infer_sharding_from_operands=infer,
    sharding_rule=_rule(kernel, n_args, present),
    need_replication_factors=("h",),
  )
  batched = jax.custom_batching.custom_vmap(op)
  batched.def_vmap(functools.partial(_vmap_rule, batched, kernel, n_args))

  @jax.custom_jvp
  def partitioned(*arrays):
    return batched(*arrays)

  @partitioned.defjvp
  def _jvp(primals, tangents):
    return jax.jvp(plain, primals, tangents)

  return partitioned


def _vmap_rule(batched, kernel: Kernel, n_args, axis_size, in_batched, *arrays):
  """Per-row results with an unbatched w: the mapped axis joins the rows;
  otherwise (per-example dw) one call per element of the mapped axis."""
  per_row_only = all(f == "n" for f in kernel.results((False,) * 3))
  if per_row_only and not in_batched[1] and not any(in_batched[n_args:]):

    def rows(a, b):
      a = a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
      return a.reshape(-1, *a.shape[2:])

    x = rows(arrays[0], in_batched[0])
    per_row = [
      rows(a, b) for a, b in zip(arrays[2:n_args], in_batched[2:n_args], strict=True)
    ]
    out = batched(x, arrays[1], *per_row, *arrays[n_args:])
    return tuple(o.reshape(axis_size, -1) for o in out), (True,) * len(out)

  def one(mapped):
    it = iter(mapped)
    return batched(
      *[next(it) if b else a for a, b in zip(arrays, in_batched, strict=True)]
    )

  out = lax.map(one, [a for a, b in zip(arrays, in_batched, strict=True) if b])
  return out, (True,) * len(out)
