"""Tiling: how the vocabulary is cut into chunks and the rows into blocks.

The chunk choice, the loop over chunks, the row blocks of the one-pass
reduced kernel, and the 16-bit slices and updates. Why 16-bit floats are cut
as their bits is explained once, in docs/internals.md ("16-bit tiles").
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxsmx._linear import _paths

# The automatic chunk: an N x chunk float32 block of at most 16 MiB, and at
# most V / 32 columns (measured: docs/internals.md, "Chunks").
BLOCK_BYTES = 16 * 2**20
LANE = 128
# Logits of at most 4 MiB (float32) are one chunk: no loop. A symbolic N
# (jax.export) is taken as 4096. A symbolic V gets chunks of at most 1024
# columns, and is padded to a whole number of them (pad_vocabulary).
SMALL_BYTES = 4 * 2**20
SYMBOLIC_ROWS = 4096
SYMBOLIC_CHUNK = 1024

# 16-bit x and w whose x takes at most 16 MiB in float32 are computed with
# float32 products (x widened once, each chunk of w as it is taken): on
# XLA:CPU a 16-bit product ran at about half the speed of a float32 one.
# Above it x stays 16-bit, and so does the backward pass's d, split in two
# (docs/internals.md, "16-bit backward").
WIDEN_BYTES = 16 * 2**20

# Row blocks of the one-pass reduced kernel: an [R, V] float32 block of at
# most 16 MiB and at most 256 rows; below 128 rows per block the chunked
# kernel is used instead (docs/internals.md, "Row blocks").
ROW_BLOCK_BYTES = 16 * 2**20
ROW_BLOCK_MAX = 256
ROW_BLOCK_MIN = 128


def rows_of(batch_shape) -> int | None:
  """N as an int, or None when a dimension is symbolic."""
  if all(isinstance(d, int) for d in batch_shape):
    return math.prod(batch_shape)
  return None


def choose_chunk(n: int | None, vocab) -> int:
  """The vocabulary chunk for N rows (None: symbolic) and V classes. A
  symbolic V (jax.export) gets the widest chunk whose N x chunk float32 block
  fits the bound, whatever V turns out to be."""
  if not isinstance(vocab, int):
    rows = SYMBOLIC_ROWS if not isinstance(n, int) else max(n, 1)
    return min(max(1, BLOCK_BYTES // (4 * rows) // LANE) * LANE, SYMBOLIC_CHUNK)
  if not isinstance(n, int):
    n = SYMBOLIC_ROWS  # a symbolic batch (jax.export): a fixed bound
  elif n * vocab * 4 <= SMALL_BYTES:
    return vocab  # small logits: one chunk, no loop (as cheap as dense)
  lanes = min(BLOCK_BYTES // (4 * max(n, 1)), vocab // 32) // LANE
  chunk = max(1, lanes) * LANE
  if chunk >= vocab:
    return vocab
  for c in range(chunk, chunk // 2, -LANE):
    if vocab % c == 0:
      return c
  return chunk


def row_block(n: int, vocab: int) -> int:
  """Rows per block of the one-pass kernel."""
  rows = min(ROW_BLOCK_BYTES // (4 * vocab), ROW_BLOCK_MAX)
  return min(n, max(8, rows // 8 * 8))


def over_chunks(body, carry, vocab, chunk, traced_tail=False):
  """Runs body(carry, start, size) over [0, V) in chunks; the last may be short.
  With `traced_tail`, a short last chunk after the loop gets its start from the
  loop (a traced value, so that its body compiles as the loop's does). An
  empty vocabulary runs no step."""
  if not isinstance(vocab, int):
    return _over_symbolic_chunks(body, carry, vocab, chunk)
  if vocab == 0:
    return carry
  full, tail = divmod(vocab, chunk)
  if full > 1:
    _paths.take("chunk_loop")
  if tail and full:
    _paths.take("chunk_tail")
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


def _over_symbolic_chunks(body, carry, vocab, chunk):
  """over_chunks for a symbolic V (jax.export), padded to a whole number of
  chunks (pad_vocabulary): a loop over however many there are. The count is
  hidden from XLA, which would otherwise unroll a loop of one chunk and fold
  the 16-bit kernel's guarded transposes into its products (see _x_t_d in
  _chunked), which XLA:CPU cannot run in bfloat16."""
  full = lax.optimization_barrier(jnp.asarray(vocab // chunk, jnp.int32))
  return lax.fori_loop(0, full, lambda j, c: body(c, j * chunk, chunk), carry)


def pad_vocabulary(w, bias, where, cw, chunk):
  """w [H, V], bias, the mask and the class weights, for a symbolic V
  (jax.export), padded to a whole number of chunks: a loop slices chunks of a
  static size, which a vocabulary of unknown size may not hold. The padding
  is masked out (its logits are -inf), so no value changes, and the padded
  columns' gradient is dropped by the autodiff of the padding."""
  vocab = w.shape[1]
  extra = chunk * ((vocab - 1) // chunk + 1) - vocab

  def pad(a):
    zeros = jnp.zeros((*a.shape[:-1], extra), a.dtype)
    return jnp.concatenate([a, zeros], axis=-1)

  mask = jnp.ones((vocab,), bool) if where is None else where
  maybe = lambda a: None if a is None else pad(a)
  return pad(w), maybe(bias), pad(mask), maybe(cw)


def over_row_blocks(body, carry, n, block, path):
  """Runs body(carry, start, size) over [0, N) in blocks of rows; `path`
  names the loop for _paths. No rows run no step."""
  if n == 0:
    return carry
  full, tail = divmod(n, block)
  if full > 1:
    _paths.take(f"{path}_loop")
  if tail and full:
    _paths.take(f"{path}_tail")
  if full == 1:
    carry = body(carry, 0, block)
  elif full > 1:
    carry = lax.fori_loop(0, full, lambda j, c: body(c, j * block, block), carry)
  if tail:
    carry = body(carry, full * block, tail)
  return carry


# ---------------------------------------------------------------------------
# Slices and updates of loop-invariant arrays; 16-bit floats as their bits
# (docs/internals.md, "16-bit tiles").


def take(a, start, size):
  """a[..., start:start + size], the chunk of a loop-invariant array."""
  if jnp.dtype(a.dtype).itemsize == 2:
    return _take_16(a, start, size)
  return lax.dynamic_slice_in_dim(a, start, size, a.ndim - 1)


def put(a, chunk, start):
  """a with a[..., start:start + size] = chunk, in place in a loop carry."""
  if jnp.dtype(a.dtype).itemsize == 2:
    return _put_16(a, chunk, start)
  return lax.dynamic_update_slice_in_dim(a, chunk, start, a.ndim - 1)


def take_rows(a, start, size):
  """a[start:start + size]; 16-bit as its bits at a traced start."""
  if isinstance(start, int):
    return lax.slice_in_dim(a, start, start + size, axis=0)
  if jnp.dtype(a.dtype).itemsize != 2:
    return lax.dynamic_slice_in_dim(a, start, size, 0)
  return _take_rows_16(a, start, size)


def in_loop(fn, start, *args):
  """fn(*args), kept in the loop body: `start` is never negative, so the
  other branch, which gives zeros, never runs."""
  zeros = lambda *a: jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, *a))
  return lax.cond(start >= 0, fn, zeros, *args)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _take_16(a, start, size):
  def cut(a, start):
    bits = lax.bitcast_convert_type(a, jnp.uint16)
    chunk = lax.dynamic_slice_in_dim(bits, start, size, a.ndim - 1)
    return lax.bitcast_convert_type(chunk, a.dtype)

  if isinstance(start, int):
    return cut(a, start)
  return in_loop(cut, start, a, start)


@_take_16.defjvp
def _take_16_jvp(size, primals, tangents):
  a, start = primals
  return _take_16(a, start, size), take(tangents[0], start, size)


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
  return _put_16(a, chunk, start), put(ta, tc.astype(ta.dtype), start)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _take_rows_16(a, start, size):
  def cut(a, start):
    bits = lax.bitcast_convert_type(a, jnp.uint16)
    rows = lax.dynamic_slice_in_dim(bits, start, size, 0)
    return lax.bitcast_convert_type(rows, a.dtype)

  return in_loop(cut, start, a, start)


@_take_rows_16.defjvp
def _take_rows_16_jvp(size, primals, tangents):
  a, start = primals
  return _take_rows_16(a, start, size), take_rows(tangents[0], start, size)


def widened(x, w) -> bool:
  """True for 16-bit x and w whose float32 copy of x is small enough to take
  (WIDEN_BYTES), with a static size."""
  narrow = x.dtype == w.dtype and jnp.dtype(x.dtype).itemsize == 2
  size = x.shape[0] * x.shape[1] if all(isinstance(d, int) for d in x.shape) else None
  return narrow and size is not None and 4 * size <= WIDEN_BYTES
