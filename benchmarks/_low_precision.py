"""16-bit cases: inputs in bfloat16 (the dtype language models train in) and
float16, against dense peers on float32 logits and on 16-bit logits.

* The fused linear CE in both modes (``reduction="none"`` then ``.mean()``,
  and ``reduction="mean"``), value_and_grad with respect to ``x`` and ``w``,
  both 16-bit, against optax's integer-label CE on ``x @ w`` formed in float32
  (``preferred_element_type``) and on ``x @ w`` left in the 16-bit dtype.
* The integer-label CE on 16-bit logits, against optax's on the same logits
  cast to float32 and on the 16-bit logits themselves.

Each row also gives every contender's gradient error against float64: the
exact gradient of the same (16-bit) inputs, computed by plain autodiff in
float64 one block of rows at a time, so that nothing N x V in float64 is held
at once. The error is ``max |g - g64| / max |g64|`` over the gradient's
entries, the worst over ``dx`` and ``dw``. Rounding the exact gradient to
bfloat16 alone gives between 2**-9 and 2**-8 of the largest entry (2.0e-3 to
3.9e-3), to float16 between 2**-12 and 2**-11 (2.4e-4 to 4.9e-4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsmx

from ._cases import Row, _jax, _labels, _measure, _vag
from ._timing import Contender

DTYPES = ("bfloat16", "float16")
REDUCTIONS = ("none", "mean")
TARGET = 1.00  # no slower than the faster dense peer
MEM_TARGET = 1 / 16  # against dense on float32 logits, as in float32
_BLOCK = 256  # rows per float64 reference block
F32 = jnp.float32


def _ce(z: jax.Array, y: jax.Array) -> jax.Array:
  """Mean integer-label CE of optax, in float32 whatever the logits' dtype."""
  loss = optax.softmax_cross_entropy_with_integer_labels(z, y)
  return loss.astype(jnp.float32).mean()


def _f64(a) -> np.ndarray:
  return np.asarray(a).astype(np.float64)


def relative_error(got: Sequence, ref: Sequence[np.ndarray]) -> float:
  """The worst over the arrays of ``max |g - r| / max |r|``."""
  return max(
    float(np.max(np.abs(_f64(g) - r)) / max(np.max(np.abs(r)), np.finfo(float).tiny))
    for g, r in zip(got, ref, strict=True)
  )


def _by_row_blocks(grad: Callable, rows: Sequence, shared: Sequence, n: int):
  """float64 gradients, one block of rows at a time. ``grad(*row_args,
  *shared)`` gives the gradients of the block's summed loss divided by ``n``:
  first that of the first row argument (stacked over the blocks), then those
  of the shared arguments (added up as the blocks go: one copy is held)."""
  firsts: list[np.ndarray] = []
  summed: list[np.ndarray] = []
  with jax.enable_x64(True):
    shared64 = [jnp.asarray(_f64(s)) for s in shared]
    g = jax.jit(grad)
    for start in range(0, n, _BLOCK):
      block = [jnp.asarray(np.asarray(r)[start : start + _BLOCK]) for r in rows]
      first, *rest = (np.asarray(o) for o in g(*block, *shared64))
      firsts.append(first)
      if summed:
        rest = [a + b for a, b in zip(summed, rest, strict=True)]
      summed = rest
  return [np.concatenate(firsts), *summed]


def linear_reference(x: jax.Array, w: jax.Array, y: jax.Array) -> list[np.ndarray]:
  """float64 ``dx, dw`` of the mean CE of ``x @ w``, for the given x and w."""
  n = x.shape[0]

  def grad(xb, yb, w):
    f = lambda xb, w: optax.softmax_cross_entropy_with_integer_labels(xb @ w, yb).sum()
    dx, dw = jax.grad(f, (0, 1))(xb.astype(jnp.float64), w)
    return dx / n, dw / n

  return _by_row_blocks(grad, (x, y), (w,), n)


def logits_reference(z: jax.Array, y: jax.Array) -> list[np.ndarray]:
  """float64 gradient of the mean integer-label CE, for the given logits."""
  n = z.shape[0]

  def grad(zb, yb):
    f = lambda zb: optax.softmax_cross_entropy_with_integer_labels(zb, yb).sum()
    return (jax.grad(f)(zb.astype(jnp.float64)) / n,)

  return _by_row_blocks(grad, (z, y), (), n)


def _grads(c: Contender) -> tuple:
  g = c.fn(*c.args)[1]
  return g if isinstance(g, tuple) else (g,)


def _with_errors(
  rows: list[Row], ours: Contender, peers: list[Contender], ref
) -> list[Row]:
  err_ours = relative_error(_grads(ours), ref)
  for r, p in zip(rows, peers, strict=True):
    r.err_ours, r.err_peer = err_ours, relative_error(_grads(p), ref)
  return rows


def _linear_inputs(n: int, h: int, v: int, dtype: str):
  k1, k2 = jax.random.split(jax.random.key(4))
  x = jax.random.normal(k1, (n, h), jnp.float32).astype(dtype)
  w = (jax.random.normal(k2, (h, v), jnp.float32) / np.sqrt(h)).astype(dtype)
  return x, w, _labels(n, v)


def _dense_peers(x, w, y, dtype: str) -> list[Contender]:
  both = (0, 1)
  f32 = lambda x, w, y: _ce(jnp.matmul(x, w, preferred_element_type=jnp.float32), y)
  low = lambda x, w, y: _ce(x @ w, y)
  return [
    _jax("dense optax on float32 logits", _vag(f32, both), x, w, y),
    _jax(f"dense optax on {dtype} logits", _vag(low, both), x, w, y),
  ]


def linear_ce_low_vag(n: int, h: int, v: int, dtype: str, runs: int) -> list[Row]:
  """Both modes of the fused loss on 16-bit x and w (one float64 reference
  serves both)."""
  x, w, y = _linear_inputs(n, h, v, dtype)
  ref = linear_reference(x, w, y)
  peers = _dense_peers(x, w, y, dtype)
  rows: list[Row] = []
  for reduction in REDUCTIONS:

    def loss(x, w, y, reduction=reduction):
      out = jaxsmx.linear_softmax_cross_entropy(x, w, y, reduction=reduction)
      return jnp.mean(out.astype(jnp.float32))

    ours = _jax("jaxsmx", _vag(loss, (0, 1)), x, w, y)
    name = "fused linear CE" if reduction == "none" else "reduced linear CE (mean)"
    measured = _measure(
      f"{name} value_and_grad, {dtype}",
      f"N={n} H={h} V={v}",
      ours,
      peers,
      runs,
      TARGET,
      memory=True,
      mem_target=MEM_TARGET,
    )
    rows += _with_errors(measured, ours, peers, ref)
  return rows


def integer_ce_low_vag(n: int, c: int, dtype: str, runs: int) -> list[Row]:
  """The integer-label CE on 16-bit logits, gradient w.r.t. the logits."""
  z = (jax.random.normal(jax.random.key(0), (n, c), jnp.float32) * 3.0).astype(dtype)
  y = _labels(n, c)
  ref = logits_reference(z, y)
  ours = _jax(
    "jaxsmx",
    _vag(
      lambda z, y: (
        jaxsmx.softmax_cross_entropy_with_integer_labels(z, y)
        .astype(jnp.float32)
        .mean()
      )
    ),
    z,
    y,
  )
  peers = [
    _jax("optax on float32 logits", _vag(lambda z, y: _ce(z.astype(F32), y)), z, y),
    _jax(f"optax on {dtype} logits", _vag(_ce), z, y),
  ]
  measured = _measure(
    f"integer-label CE value_and_grad, {dtype}",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    TARGET,
    memory=True,
  )
  return _with_errors(measured, ours, peers, ref)


def all_rows(
  linear: Sequence[tuple[int, int, int]],
  ce: Sequence[tuple[int, int]],
  runs: int,
  dtypes: Sequence[str] = DTYPES,
  report: Callable[[list[Row]], None] = lambda rows: None,
) -> list[Row]:
  """Every 16-bit row: for each dtype, the fused loss (both modes) at each
  ``(N, H, V)`` and the integer-label CE at each ``(N, V)``."""
  rows: list[Row] = []
  for dtype in dtypes:
    for n, h, v in linear:
      new = linear_ce_low_vag(n, h, v, dtype, runs)
      report(new)
      rows += new
    for n, c in ce:
      new = integer_ce_low_vag(n, c, dtype, runs)
      report(new)
      rows += new
  return rows
