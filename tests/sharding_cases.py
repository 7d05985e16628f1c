r"""Every jaxsmx function on 8 simulated CPU devices, as a script.

XLA fixes the number of host devices when jax is first imported, so these
checks run in their own process: ``tests/test_sharding.py`` starts

    python tests/sharding_cases.py

which sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before it
imports jax, runs every case on a 2 x 4 ("data", "model") mesh, in both of
JAX's sharding modes (``auto``: jit with NamedSharding inputs, XLA propagates;
``explicit``: shardings in the types, under ``jax.set_mesh``) and inside a
user's ``shard_map``, and prints one JSON object: a list of checks, each
``{"name", "ok", "detail", "seconds"}``, and the collectives found in the
compiled HLO of the cases that are checked for them.

``--report`` prints, instead, the collectives of value_and_grad of the two
cross-entropies at a realistic size (the numbers quoted in the README).

The HLO parser at the top needs only the standard library, so that the test
module can check it on its own.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
import sys
import time

# ---------------------------------------------------------------------------
# collectives in compiled HLO text

# Ops that move data between devices without reducing it: the ones that
# give away a gathered logits block.
MOVING = frozenset(
  {
    "all-gather",
    "all-to-all",
    "ragged-all-to-all",
    "collective-permute",
    "collective-broadcast",
  }
)
REDUCING = frozenset({"all-reduce", "reduce-scatter"})

_OP = re.compile(
  r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s+"
  r"(?P<op>all-gather|all-reduce|all-to-all|ragged-all-to-all|"
  r"collective-permute|collective-broadcast|reduce-scatter)"
  r"(?P<suffix>-start|-done)?\(",
  re.M,
)
_MESH_GROUPS = re.compile(
  r"replica_groups=mesh\[(?P<axes>[^\]]*)\]\s*\{(?P<over>[^}]*)\}"
)
_IOTA_GROUPS = re.compile(r"replica_groups=\[(?P<dims>[\d,]+)\]<=")
_LIST_GROUPS = re.compile(r"replica_groups=\{(?P<groups>(?:\{[\d,]*\},?)*)\}")
_ARRAY = re.compile(r"\b(?P<dtype>pred|bf16|f8\w*|[fsuc]\d+)\[(?P<dims>[\d,]*)\]")
_BITS = {"pred": 8, "bf16": 16}


def _dtype_bytes(dtype: str) -> int:
  if dtype in _BITS:
    return _BITS[dtype] // 8
  if dtype.startswith("f8"):
    return 1
  return max(1, int(re.sub(r"\D", "", dtype)) // 8)


def group_size(line: str) -> int | None:
  """How many devices take part in each group of a collective (None: unknown,
  0: all of them)."""
  if m := _MESH_GROUPS.search(line):
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group("axes")))
    over = re.findall(r"'([^']+)'", m.group("over"))
    return math.prod(int(sizes[a]) for a in over)
  if m := _IOTA_GROUPS.search(line):
    return int(m.group("dims").split(",")[-1])
  if m := _LIST_GROUPS.search(line):
    first = re.match(r"\{([\d,]*)\}", m.group("groups"))
    return len(first.group(1).split(",")) if first and first.group(1) else 0
  return None


def _reduction(hlo: str, line: str) -> str | None:
  """The binary op (add, maximum, ...) of an all-reduce's to_apply region."""
  name = re.search(r"to_apply=(%?[\w.\-]+)", line)
  if name is None:
    return None
  region = re.search(
    r"^" + re.escape(name.group(1)) + r"\b[^{\n]*\{(.*?)^\}", hlo, re.S | re.M
  )
  if region is None:
    return None
  ops = re.findall(r"ROOT [^=]*= \S+ (\w+)\(", region.group(1))
  return ops[0] if ops else None


def collectives(hlo: str) -> list[dict]:
  """The collectives of an HLO module's text, one dict per op.

  Each has ``op`` (``all-gather``, ...), ``arrays`` (``[dtype, shape]`` of
  each result: a combined op has several), ``max_elements`` (of its largest
  result array) and ``bytes`` (all results together). An async pair
  ``*-start``/``*-done`` counts once, at its start, whose tuple holds the
  operands and the results: there the largest array is taken as the result.
  ``devices`` is the size of each replica group (see `group_size`), and
  ``reduction`` the op of an all-reduce (``add``, ``maximum``, ...).
  """
  found = []
  for m in _OP.finditer(hlo):
    if m.group("suffix") == "-done":
      continue
    arrays = [
      (a.group("dtype"), tuple(int(d) for d in a.group("dims").split(",") if d))
      for a in _ARRAY.finditer(m.group("shape"))
    ]
    if m.group("suffix") == "-start":
      arrays = [max(arrays, key=lambda a: math.prod(a[1]))] if arrays else []
    found.append(
      {
        "op": m.group("op"),
        "arrays": [[d, list(s)] for d, s in arrays],
        "max_elements": max((math.prod(s) for _, s in arrays), default=0),
        "bytes": sum(math.prod(s) * _dtype_bytes(d) for d, s in arrays),
        "devices": group_size(line := hlo[m.end() : hlo.find("\n", m.end())]),
        "reduction": _reduction(hlo, line),
      }
    )
  return found


def too_large(found: list[dict], block: int, *, moving_only: bool = True) -> list[dict]:
  """The collectives with a result array of `block` elements or more.

  `block` is the per-device logits block, (N / dp) x (V / mp). By default only
  ops that move data (all-gather, all-to-all, collective-permute) count.
  """
  return [
    c
    for c in found
    if (c["op"] in MOVING or not moving_only) and c["max_elements"] >= block
  ]


# ---------------------------------------------------------------------------
# the cases (need jax; imported by main only)

DP, MP = 2, 4
RTOL, ATOL = 1e-5, 1e-6


def _cases(jax, jnp, np, jaxsmx, P):
  """(name, fn, diff args, other args, out spec); args are (array, spec)."""
  rng = np.random.default_rng(0)
  n, c, h, v = 16, 64, 8, 128

  def normal(*shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)

  def probs(*shape):
    return np.asarray(jax.nn.softmax(normal(*shape)), np.float32)

  z, y = normal(n, c, scale=2.0), probs(n, c)
  p, q = probs(n, c), probs(n, c)
  labels = rng.integers(0, c, n).astype(np.int32)
  labels_ign = labels.copy()
  labels_ign[[1, 6]] = -100
  mask = rng.random((n, c)) > 0.2
  mask[np.arange(n), labels] = True
  x, w, b = normal(n, h), normal(h, v, scale=0.5), normal(v)
  x3, vlab3 = x.reshape(2, n // 2, h), rng.integers(0, v, (2, n // 2)).astype(np.int32)
  vlab = rng.integers(0, v, n).astype(np.int32)
  vlab_ign = vlab.copy()
  vlab_ign[[0, 9]] = -100
  vmask = rng.random(v) > 0.1
  vmask[vlab] = True

  nc, n_ = P("data", "model"), P("data")
  xs, ws, vs = P("data", None), P(None, "model"), P("model")
  return [
    ("softmax", jaxsmx.softmax, [(z, nc)], [], nc),
    ("log_softmax", jaxsmx.log_softmax, [(z, nc)], [], nc),
    (
      "softmax[where]",
      lambda z, m: jaxsmx.softmax(z, where=m),
      [(z, nc)],
      [(mask, nc)],
      nc,
    ),
    ("logsumexp", lambda z: jaxsmx.logsumexp(z, axis=-1), [(z, nc)], [], n_),
    ("softmax_entropy", jaxsmx.softmax_entropy, [(z, nc)], [], n_),
    ("entropy", jaxsmx.entropy, [(p, nc)], [], n_),
    ("cross_entropy", jaxsmx.cross_entropy, [(p, nc), (q, nc)], [], n_),
    (
      "kl_divergence",
      jaxsmx.kl_divergence,
      [(np.log(q), nc), (p, nc)],
      [],
      n_,
    ),
    (
      "softmax_cross_entropy",
      jaxsmx.softmax_cross_entropy,
      [(z, nc), (y, nc)],
      [],
      n_,
    ),
    (
      "softmax_cross_entropy[label_smoothing]",
      lambda z, y: jaxsmx.softmax_cross_entropy(z, y, label_smoothing=0.1),
      [(z, nc), (y, nc)],
      [],
      n_,
    ),
    (
      "softmax_cross_entropy_with_integer_labels",
      jaxsmx.softmax_cross_entropy_with_integer_labels,
      [(z, nc)],
      [(labels, n_)],
      n_,
    ),
    (
      "softmax_cross_entropy_with_integer_labels[where,smoothing,ignore]",
      lambda z, lab, m: jaxsmx.softmax_cross_entropy_with_integer_labels(
        z, lab, where=m, label_smoothing=0.1, ignore_index=-100
      ),
      [(z, nc)],
      [(labels_ign, n_), (mask, nc)],
      n_,
    ),
    (
      "softmax_cross_entropy_with_integer_labels[data only]",
      jaxsmx.softmax_cross_entropy_with_integer_labels,
      [(z, xs)],
      [(labels, n_)],
      n_,
    ),
    (
      "sigmoid_binary_cross_entropy",
      jaxsmx.sigmoid_binary_cross_entropy,
      [(z, nc), (p, nc)],
      [],
      nc,
    ),
    (
      "linear_softmax_cross_entropy",
      jaxsmx.linear_softmax_cross_entropy,
      [(x, xs), (w, ws)],
      [(vlab, n_)],
      n_,
    ),
    (
      "linear_softmax_cross_entropy[chunk_size=8]",
      lambda x, w, lab: jaxsmx.linear_softmax_cross_entropy(x, w, lab, chunk_size=8),
      [(x, xs), (w, ws)],
      [(vlab, n_)],
      n_,
    ),
    (
      "linear_softmax_cross_entropy[bias,where,options,chunk_size=24]",
      lambda x, w, b, lab, m: jaxsmx.linear_softmax_cross_entropy(
        x,
        w,
        lab,
        bias=b,
        where=m,
        ignore_index=-100,
        label_smoothing=0.1,
        z_loss=1e-3,
        softcap=5.0,
        chunk_size=24,
      ),
      [(x, xs), (w, ws), (b, vs)],
      [(vlab_ign, n_), (vmask, vs)],
      n_,
    ),
    (
      "softmax_cross_entropy_with_integer_labels[class_weights,smoothing,ignore]",
      lambda z, cw, lab: jaxsmx.softmax_cross_entropy_with_integer_labels(
        z, lab, label_smoothing=0.1, ignore_index=-100, class_weights=cw
      ),
      [(z, nc), (np.linspace(0.5, 2.0, c).astype(np.float32), P("model"))],
      [(labels_ign, n_)],
      n_,
    ),
    *[
      (
        f"linear_softmax_cross_entropy[class_weights,where,options,{r},chunk_size=24]",
        lambda x, w, cw, lab, m, r=r: jaxsmx.linear_softmax_cross_entropy(
          x,
          w,
          lab,
          where=m,
          ignore_index=-100,
          label_smoothing=0.1,
          z_loss=1e-3,
          class_weights=cw,
          reduction=r,
          chunk_size=24,
        ),
        [(x, xs), (w, ws), (np.linspace(0.5, 2.0, v).astype(np.float32), vs)],
        [(vlab_ign, n_), (vmask, vs)],
        n_ if r == "none" else P(),
      )
      for r in ("none",)  # reduced: in _mismatched_cases (explicit sharding)
    ],
    (
      "linear_softmax_cross_entropy[x [B, T, H] with H sharded,chunk_size=16]",
      lambda x, w, lab: jaxsmx.linear_softmax_cross_entropy(x, w, lab, chunk_size=16),
      [(x3, P("data", None, "model")), (w, ws)],
      [(vlab3, P("data", None))],
      P("data", None),
    ),
    (
      "linear_softmax_cross_entropy[data only,chunk_size=32]",
      lambda x, w, lab: jaxsmx.linear_softmax_cross_entropy(x, w, lab, chunk_size=32),
      [(x, xs), (w, P(None, None))],
      [(vlab, n_)],
      n_,
    ),
  ]


def _mismatched_cases(jax, jnp, np, jaxsmx, P):
  """Explicit or automatic sharding with the other inputs sharded unlike the logits (a
  target replicated or split over the rows only, as one_hot of data-sharded
  labels is; a replicated bias or weights beside a vocabulary-sharded w; a
  replicated input under a sharded mask): each gradient must come back with
  its primal's sharding. Same tuples as _cases."""
  rng = np.random.default_rng(3)
  n, c, h, v = 16, 64, 8, 128
  z = (2.0 * rng.standard_normal((n, c))).astype(np.float32)
  y = np.asarray(jax.nn.softmax(rng.standard_normal((n, c))), np.float32)
  q = np.asarray(jax.nn.softmax(rng.standard_normal((n, c))), np.float32)
  bz = rng.uniform(0.1, 2.0, (n, c)).astype(np.float32)
  labels = rng.integers(0, c, n).astype(np.int32)
  mask = rng.random((n, c)) > 0.2
  mask[:, 0] = True
  x, w = rng.standard_normal((n, h)).astype(np.float32), rng.standard_normal((h, v))
  w = (0.5 * w).astype(np.float32)
  b = rng.standard_normal(v).astype(np.float32)
  vlab = rng.integers(0, v, n).astype(np.int32)
  omega = rng.uniform(0.5, 2.0, n).astype(np.float32)
  nc, rows, rep, n_ = P("data", "model"), P("data", None), P(), P("data")
  out = []
  for tag, ts in (("rows", rows), ("replicated", rep)):
    out += [
      (
        f"softmax_cross_entropy[labels {tag}]",
        jaxsmx.softmax_cross_entropy,
        [(z, nc), (y, ts)],
        [],
        n_,
      ),
      (
        f"softmax_cross_entropy[labels {tag}, d/dlogits only]",
        jaxsmx.softmax_cross_entropy,
        [(z, nc)],
        [(y, ts)],
        n_,
      ),
      (
        f"sigmoid_binary_cross_entropy[labels {tag}]",
        jaxsmx.sigmoid_binary_cross_entropy,
        [(z, nc), (y, ts)],
        [],
        nc,
      ),
      (
        f"kl_divergence[targets {tag}]",
        jaxsmx.kl_divergence,
        [(np.log(q), nc), (y, ts)],
        [],
        n_,
      ),
      (f"cross_entropy[q {tag}]", jaxsmx.cross_entropy, [(y, nc), (q, ts)], [], n_),
      (
        f"logsumexp[b {tag}]",
        lambda a, b: jaxsmx.logsumexp(a, axis=-1, b=b),
        [(z, nc), (bz, ts)],
        [],
        n_,
      ),
      (
        f"softmax_cross_entropy_with_integer_labels[where {tag}]",
        lambda z, lab, m: jaxsmx.softmax_cross_entropy_with_integer_labels(
          z, lab, where=m
        ),
        [(z, nc)],
        [(labels, rep if tag == "replicated" else n_), (mask, ts)],
        n_,
      ),
    ]
  for name, f in (("softmax", jaxsmx.softmax), ("log_softmax", jaxsmx.log_softmax)):
    out.append(
      (
        f"{name}[input replicated, where sharded]",
        lambda a, m, f=f: jnp.where(m, f(a, where=m), 0.0),
        [(z, rep)],
        [(mask, nc)],
        nc,  # the outer where's
      )
    )
  out.append(
    (
      "logsumexp[input replicated, where sharded]",
      lambda a, m: jaxsmx.logsumexp(a, axis=-1, where=m),
      [(z, rep)],
      [(mask, nc)],
      rep,
    )
  )
  lce = jaxsmx.linear_softmax_cross_entropy
  ws = P(None, "model")
  cw = np.linspace(0.5, 2.0, w.shape[1]).astype(np.float32)
  for reduction in ("none", "sum", "mean"):
    o = n_ if reduction == "none" else P()
    out += [
      (
        f"linear_softmax_cross_entropy[bias replicated,{reduction}]",
        lambda x, w, b, lab, r=reduction: lce(x, w, lab, bias=b, reduction=r),
        [(x, rows), (w, ws), (b, rep)],
        [(vlab, n_)],
        o,
      ),
      (
        f"linear_softmax_cross_entropy[weights replicated,{reduction}]",
        lambda x, w, om, lab, r=reduction: lce(x, w, lab, weights=om, reduction=r),
        [(x, rows), (w, ws), (omega, rep)],
        [(vlab, n_)],
        o,
      ),
      (
        f"linear_softmax_cross_entropy[class_weights replicated,{reduction}]",
        lambda x, w, cw, lab, r=reduction: lce(
          x, w, lab, class_weights=cw, label_smoothing=0.1, reduction=r
        ),
        [(x, rows), (w, ws), (cw, rep)],
        [(vlab, n_)],
        o,
      ),
      (
        f"linear_softmax_cross_entropy[x and labels replicated,{reduction}]",
        lambda x, w, lab, r=reduction: lce(x, w, lab, reduction=r),
        [(x, rep), (w, ws)],
        [(vlab, rep)],
        P() if reduction != "none" else rep,
      ),
    ]
  return out


def _mixed_cases(jax, jnp, np, jaxsmx, P):
  """Inside a user's shard_map, differentiable inputs that vary over different
  mesh axes: (name, fn, [(array, in_spec)], out_spec). Each cotangent must
  come back summed over the axes its input does not vary along."""
  rng = np.random.default_rng(2)
  n, c = 16, 64
  z = (2.0 * rng.standard_normal((n, c))).astype(np.float32)
  lq = np.asarray(jax.nn.log_softmax(rng.standard_normal((n, c))), np.float32)
  q = np.exp(lq)
  # one target distribution for the whole batch, replicated on every device
  t = np.asarray(jax.nn.softmax(rng.standard_normal(c)), np.float32)
  b = rng.uniform(0.1, 2.0, c).astype(np.float32)
  b4 = rng.uniform(0.1, 2.0, (MP, 1, c)).astype(np.float32)
  # one target distribution per "model" index: varies over the other axis
  t4 = np.asarray(jax.nn.softmax(rng.standard_normal((MP, 1, c))), np.float32)
  rows, rep, per_model = P("data"), P(), P("model")
  return [
    (
      "softmax_cross_entropy[logits over data, labels replicated]",
      jaxsmx.softmax_cross_entropy,
      [(z, rows), (t, rep)],
      rows,
    ),
    (
      "softmax_cross_entropy[logits over data, labels over model]",
      jaxsmx.softmax_cross_entropy,
      [(z, rows), (t4, per_model)],
      P("model", "data"),
    ),
    (
      "cross_entropy[p replicated, q over data]",
      jaxsmx.cross_entropy,
      [(t, rep), (q, rows)],
      rows,
    ),
    (
      "kl_divergence[log_predictions over data, targets replicated]",
      jaxsmx.kl_divergence,
      [(lq, rows), (t, rep)],
      rows,
    ),
    (
      "kl_divergence[log_predictions over data, targets over model]",
      jaxsmx.kl_divergence,
      [(lq, rows), (t4, per_model)],
      P("model", "data"),
    ),
    (
      "sigmoid_binary_cross_entropy[logits over data, labels replicated]",
      jaxsmx.sigmoid_binary_cross_entropy,
      [(z, rows), (t, rep)],
      rows,
    ),
    (
      "logsumexp[a over data, b replicated]",
      lambda a, b: jaxsmx.logsumexp(a, axis=-1, b=b),
      [(z, rows), (b, rep)],
      rows,
    ),
    (
      "logsumexp[a over data, b over model, return_sign]",
      lambda a, b: jaxsmx.logsumexp(a, axis=-1, b=b, return_sign=True)[0],
      [
        (z, rows),
        (b4, per_model),
      ],
      P("model", "data"),
    ),
  ]


def _check_mixed_in_shard_map(jax, np, mesh, put, fn, diff, out_spec, ref):
  """shard_map with the given in_specs (check_vma on, the default): values
  and VJPs equal one device's."""
  value_and_vjp = _value_and_vjp(jax, fn)
  ct, (want_out, want_grads) = ref.get()
  specs = [s for _, s in diff]
  mapped = jax.shard_map(
    value_and_vjp,
    mesh=mesh,
    in_specs=(specs, [], out_spec),
    out_specs=(out_spec, tuple(specs)),
  )
  got_out, got_grads = jax.jit(mapped)(
    [put(a, s) for a, s in diff], [], put(ct, out_spec)
  )
  np.testing.assert_allclose(got_out, want_out, rtol=RTOL, atol=ATOL)
  for i, (g, wg) in enumerate(zip(got_grads, want_grads, strict=True)):
    np.testing.assert_allclose(
      g, wg, rtol=RTOL, atol=ATOL, err_msg=f"gradient of argument {i}"
    )
  return {"in_specs": [str(s) for s in specs], "out_spec": str(out_spec)}


def _careless_kl(jax, jnp):
  """kl_divergence as a custom_vjp without the varying-type cast: inside
  shard_map, its targets' cotangent varies where the targets do not."""

  @jax.custom_vjp
  def kl(lq, t):
    return jnp.sum(t * (jnp.log(t) - lq), -1)

  def fwd(lq, t):
    return kl(lq, t), (lq, t)

  def bwd(res, g):
    lq, t = res
    g = g[..., None]
    return -g * t, g * (jnp.log(t) + 1.0 - lq)

  kl.defvjp(fwd, bwd)
  return lambda lq, t: kl(lq, jnp.broadcast_to(t, lq.shape))


def _rejects_careless(jax, jnp, np, jaxsmx, mesh, put, P):
  """The mixed-axes check fails on a rule without the cast."""
  _, _, diff, out_spec = next(
    c for c in _mixed_cases(jax, jnp, np, jaxsmx, P) if c[0].startswith("kl_div")
  )
  fn = _careless_kl(jax, jnp)
  ref = _Reference(jax, np, fn, diff, [], {}, "careless")
  try:
    _check_mixed_in_shard_map(jax, np, mesh, put, fn, diff, out_spec, ref)
  except (ValueError, TypeError, AssertionError) as e:
    return {"caught": f"{type(e).__name__}: {str(e)[:300]}"}
  return False, {"caught": None}


def _hlo_cases(jax, jnp, np, jaxsmx, P, *, n=64, h=16, v=1024, report=False):
  """value_and_grad of the two cross-entropies, vocabulary-parallel.

  Returns (name, fn, args as (shape, dtype, spec), argnums, block elements).
  """
  del np
  f32, i32 = jnp.float32, jnp.int32
  block = (n // DP) * (v // MP)

  def int_ce(z, lab):
    return jnp.mean(jaxsmx.softmax_cross_entropy_with_integer_labels(z, lab))

  def linear_ce(x, w, lab):
    return jnp.mean(jaxsmx.linear_softmax_cross_entropy(x, w, lab))

  cases = [
    (
      "softmax_cross_entropy_with_integer_labels",
      int_ce,
      [((n, v), f32, P("data", "model")), ((n,), i32, P("data"))],
      0,
      block,
    ),
    (
      "linear_softmax_cross_entropy",
      linear_ce,
      [
        ((n, h), f32, P("data", None)),
        ((h, v), f32, P(None, "model")),
        ((n,), i32, P("data")),
      ],
      (0, 1),
      block,
    ),
  ]
  if not report:
    # several vocabulary chunks per device: the loop must stay local
    cases.append(
      (
        "linear_softmax_cross_entropy[chunk_size=128]",
        lambda x, w, lab: jnp.mean(
          jaxsmx.linear_softmax_cross_entropy(x, w, lab, chunk_size=128)
        ),
        cases[1][2],
        (0, 1),
        block,
      )
    )
  return cases


def _careless_int_ce(jax, jnp, mesh, P, explicit):
  """An integer-label CE that gathers the logits: the checker must flag it."""

  def loss(z, lab):
    full = P("data", None)
    if explicit:
      z = jax.sharding.reshard(z, full)
    else:
      z = jax.lax.with_sharding_constraint(z, jax.NamedSharding(mesh, full))
    lp = jax.nn.log_softmax(z)
    return -jnp.mean(jnp.take_along_axis(lp, lab[:, None], axis=-1))

  return loss


def _reduced_linear(jax, np, jaxsmx, P):
  """The fused loss's reduced modes, "sum" and "mean" with per-example weights
  and every option, rows of x over "data" and columns of w over "model":
  (name, check) pairs, each comparing values and gradients with one device's.
  For "sum", also inside a user's shard_map over 8 row blocks, where the psum
  of the devices' values and gradients is the one-device result."""
  from jax.sharding import AxisType, NamedSharding

  n, h, v = 16, 8, 128
  r = np.random.default_rng(0)
  x = r.standard_normal((n, h)).astype(np.float32)
  w = (0.5 * r.standard_normal((h, v))).astype(np.float32)
  b = r.standard_normal(v).astype(np.float32)
  labels = r.integers(0, v, n).astype(np.int32)
  labels[[1, 6]] = -100
  where = r.random(v) > 0.2
  where[labels[labels >= 0]] = True
  omega = r.random(n).astype(np.float32)
  opts = dict(
    where=where, ignore_index=-100, label_smoothing=0.1, z_loss=1e-3, softcap=5.0
  )
  args = (x, w, b, omega, labels)
  specs = (P("data", None), P(None, "model"), P("model"), P("data"), P("data"))

  def value_and_grad(reduction):
    def f(x, w, b, om, lab):
      return jaxsmx.linear_softmax_cross_entropy(
        x, w, lab, bias=b, weights=om, reduction=reduction, chunk_size=16, **opts
      )

    return jax.value_and_grad(f, (0, 1, 2, 3))

  def close(got, want):
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-5, atol=2e-6)
    return "values and gradients equal one device's"

  def sharded(reduction, kind):
    vg = value_and_grad(reduction)
    mesh = jax.make_mesh((DP, MP), ("data", "model"), axis_types=(kind, kind))
    pairs = zip(args, specs, strict=True)
    put = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in pairs]
    with jax.set_mesh(mesh) if kind == AxisType.Explicit else _nullcontext():
      got = jax.jit(vg)(*put)
    return close(got, jax.jit(vg)(*args))

  def in_shard_map():
    vg = value_and_grad("sum")
    mesh = jax.make_mesh((DP * MP,), ("data",), axis_types=(AxisType.Auto,))

    def local(x, w, b, om, lab):
      value, grads = vg(x, w, b, om, lab)
      return jax.lax.psum(value, "data"), grads

    mapped = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(P("data"), P(), P(), P("data"), P("data")),
      out_specs=(P(), (P("data"), P(), P(), P("data"))),
    )
    return close(jax.jit(mapped)(*args), jax.jit(vg)(*args))

  out = []
  for reduction in ("sum", "mean"):
    for mode, kind in (("auto", AxisType.Auto), ("explicit", AxisType.Explicit)):
      check = functools.partial(sharded, reduction, kind)
      out.append((f"{mode}: reduced linear CE ({reduction}, weights)", check))
  name = "shard_map: reduced linear CE (sum, weights), psum of rows"
  out.append((name, in_shard_map))
  return out


def _run(checks, name, fn, *args):
  """Runs one check, fn(*args) -> detail or (ok, detail); records failures."""
  start = time.perf_counter()
  try:
    detail = fn(*args)
  except Exception as e:  # report, keep going
    message = f"{type(e).__name__}: {e}"
    checks.append({"name": name, "ok": False, "detail": message[:3000]})
    return
  ok, detail = detail if isinstance(detail, tuple) else (True, detail)
  seconds = round(time.perf_counter() - start, 2)
  checks.append({"name": name, "ok": bool(ok), "detail": detail, "seconds": seconds})


def main(argv: list[str]) -> int:
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import jaxsmx

  report = "--report" in argv
  checks: list[dict] = []
  hlo: dict = {}
  result = {"devices": [str(d) for d in jax.devices()], "checks": checks, "hlo": hlo}
  references: dict = {}  # one device's results, per case

  for mode in ("explicit",) if report else ("auto", "explicit"):
    axis_type = AxisType.Explicit if mode == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((DP, MP), ("data", "model"), axis_types=(axis_type,) * 2)
    explicit = mode == "explicit"

    def put(a, spec, mesh=mesh):
      return jax.device_put(a, NamedSharding(mesh, spec))

    def context(mesh=mesh, explicit=explicit):
      return jax.set_mesh(mesh) if explicit else _nullcontext()

    if not report:
      for name, fn, diff, other, out_spec in _cases(jax, jnp, np, jaxsmx, P):
        ref = _Reference(jax, np, fn, diff, other, references, name)
        _run(
          checks,
          f"{mode}: {name}",
          _check_case,
          *(jax, np, mesh, put, context, fn, diff, other, out_spec, ref),
        )
        if mode == "auto":  # inside shard_map every mesh axis is manual
          _run(
            checks,
            f"shard_map: {name}",
            _check_in_shard_map,
            *(jax, np, mesh, put, fn, diff, other, out_spec, ref),
          )
      # other inputs sharded unlike the logits: explicit, and automatic
      # (jit of NamedSharding inputs, XLA propagating)
      for name, fn, diff, other, out_spec in _mismatched_cases(jax, jnp, np, jaxsmx, P):
        ref = _Reference(jax, np, fn, diff, other, references, name)
        # automatic sharding: XLA picks the gradients' shardings, so only
        # the values are checked
        _run(
          checks,
          f"{mode} mismatched shardings: {name}",
          functools.partial(_check_case, follow=explicit),
          *(jax, np, mesh, put, context, fn, diff, other, out_spec, ref),
        )
      if mode == "auto":
        for name, fn, diff, out_spec in _mixed_cases(jax, jnp, np, jaxsmx, P):
          ref = _Reference(jax, np, fn, diff, [], references, name)
          _run(
            checks,
            f"shard_map mixed varying axes: {name}",
            _check_mixed_in_shard_map,
            *(jax, np, mesh, put, fn, diff, out_spec, ref),
          )
        _run(
          checks,
          "shard_map mixed varying axes: checker rejects a rule without the cast",
          _rejects_careless,
          *(jax, jnp, np, jaxsmx, mesh, put, P),
        )

    sizes = _REPORT_SIZE if report else {}
    for name, fn, specs, argnums, block in _hlo_cases(jax, jnp, np, jaxsmx, P, **sizes):
      _run(
        checks,
        f"{mode}: collectives of value_and_grad({name})",
        _check_hlo,
        *(jax, mesh, context, fn, specs, argnums, block, hlo, f"{mode}: {name}"),
      )

    if not report:
      # the checker flags a careless implementation
      _, _, specs, _, block = _hlo_cases(jax, jnp, np, jaxsmx, P)[0]
      careless = _careless_int_ce(jax, jnp, mesh, P, explicit)
      key = f"{mode}: careless take_along_axis on gathered logits"
      _run(
        checks,
        f"{mode}: checker flags a careless all-gather",
        _flagged,
        *(jax, mesh, context, careless, specs, block, hlo, key),
      )

  if report:
    _print_table(hlo, checks)
    return 0 if all(c["ok"] for c in checks) else 1
  for name, check in _reduced_linear(jax, np, jaxsmx, P):
    _run(checks, name, check)
  _run(checks, "README example: Scaling out", _readme_example, jax, np)
  # the README's table of collectives, at the README's size
  big: dict = {}
  for name, fn, specs, argnums, block in _hlo_cases(
    jax, jnp, np, jaxsmx, P, **_REPORT_SIZE
  ):
    _run(
      checks,
      f"README size: collectives of value_and_grad({name})",
      _check_hlo,
      *(jax, mesh, context, fn, specs, argnums, block, big, f"explicit: {name}"),
    )
  _run(checks, "README table of collectives matches the HLO", _readme_table, big)
  json.dump(result, sys.stdout, indent=1)
  print()
  return 0 if all(c["ok"] for c in checks) else 1


# the README's configuration: 16384 tokens, H = 2048, V = 131072, float32
_REPORT_SIZE = {"n": 16384, "h": 2048, "v": 131072, "report": True}


def _print_table(hlo: dict, checks: list[dict]) -> None:
  """The README's table of collectives."""
  n, h, v = (_REPORT_SIZE[k] for k in "nhv")
  print(
    f"N = {n} rows, H = {h}, V = {v}, float32, mesh data={DP} x model={MP}:"
    f" per-device logits block {n // DP} x {v // MP}"
    f" = {_size(n // DP * v // MP * 4)}\n"
  )
  over = {DP: "data", MP: "model", DP * MP: "all", 0: "all"}
  print("| value_and_grad of | collective | over | result | size |")
  print("|---|---|---|---|---|")
  kinds = {"add": "sum", "maximum": "max"}
  for key, entry in hlo.items():
    for c in entry["collectives"]:
      shapes = ", ".join(f"{d}[{','.join(map(str, s))}]" for d, s in c["arrays"])
      axis = over.get(c["devices"], str(c["devices"]))
      print(
        f"| {key.split(': ', 1)[1]} | {c['op']}"
        f" ({kinds.get(c['reduction'], c['reduction'])}) | {axis} | {shapes} |"
        f" {_size(c['bytes'])} |"
      )
  for c in checks:
    print(f"\n{'ok' if c['ok'] else 'FAILED'}: {c['name']}")


def _size(nbytes: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if nbytes < 1024 or unit == "GiB":
      return f"{nbytes:g} {unit}" if unit == "B" else f"{nbytes:.4g} {unit}"
    nbytes /= 1024
  raise AssertionError


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _value_and_vjp(jax, fn):
  def value_and_vjp(diff_args, other_args, ct):
    out, vjp = jax.vjp(lambda *d: fn(*d, *other_args), *diff_args)
    return out, vjp(ct)

  return value_and_vjp


class _Reference:
  """One device's value and VJP, for a fixed random cotangent: computed once
  per case, when a check first needs it (so that its failure is that check's)."""

  def __init__(self, jax, np, fn, diff, other, cache, name):
    self.args, self.cache, self.name = (jax, np, fn, diff, other), cache, name

  def get(self):
    if self.name not in self.cache:
      jax, np, fn, diff, other = self.args
      arrays = [a for a, _ in diff]
      others = [a for a, _ in other]
      shape = jax.eval_shape(fn, *arrays, *others).shape
      ct = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
      self.cache[self.name] = ct, jax.jit(_value_and_vjp(jax, fn))(arrays, others, ct)
    return self.cache[self.name]


def _check_case(
  jax, np, mesh, put, context, fn, diff, other, out_spec, ref, *, follow=True
):
  """Values and a VJP on the mesh equal one device's; shardings follow inputs
  (with `follow`)."""
  from jax.sharding import NamedSharding

  value_and_vjp = _value_and_vjp(jax, fn)
  ct, (want_out, want_grads) = ref.get()
  with context():
    got_out, got_grads = jax.jit(value_and_vjp)(
      [put(a, s) for a, s in diff],
      [put(a, s) for a, s in other],
      put(ct, out_spec),
    )
  problems = []
  np.testing.assert_allclose(got_out, want_out, rtol=RTOL, atol=ATOL)
  for i, (g, wg) in enumerate(zip(got_grads, want_grads, strict=True)):
    np.testing.assert_allclose(
      g, wg, rtol=RTOL, atol=ATOL, err_msg=f"gradient of argument {i}"
    )

  def follows(arr, spec, what):
    want = NamedSharding(mesh, spec)
    if not arr.sharding.is_equivalent_to(want, arr.ndim):
      problems.append(f"{what}: sharding {arr.sharding.spec}, expected {spec}")

  if follow:
    follows(got_out, out_spec, "output")
    for i, (g, (_, spec)) in enumerate(zip(got_grads, diff, strict=True)):
      follows(g, spec, f"gradient of argument {i}")
  return not problems, {"problems": problems}


def _check_in_shard_map(jax, np, mesh, put, fn, diff, other, out_spec, ref):
  """Inside a user's shard_map (rows split over "data", every class on each
  device; arrays without rows, such as w, are invariant), values and the VJP
  equal one device's."""
  from jax.sharding import PartitionSpec as P

  def local(spec):
    return P(*(None if e == "model" else e for e in spec))

  value_and_vjp = _value_and_vjp(jax, fn)
  ct, (want_out, want_grads) = ref.get()
  diff_specs = [local(s) for _, s in diff]
  other_specs = [local(s) for _, s in other]
  mapped = jax.shard_map(
    value_and_vjp,
    mesh=mesh,
    in_specs=(diff_specs, other_specs, local(out_spec)),
    out_specs=(local(out_spec), tuple(diff_specs)),
  )
  got_out, got_grads = jax.jit(mapped)(
    [put(a, s) for (a, _), s in zip(diff, diff_specs, strict=True)],
    [put(a, s) for (a, _), s in zip(other, other_specs, strict=True)],
    put(ct, local(out_spec)),
  )
  np.testing.assert_allclose(got_out, want_out, rtol=RTOL, atol=ATOL)
  for i, (g, wg) in enumerate(zip(got_grads, want_grads, strict=True)):
    np.testing.assert_allclose(
      g, wg, rtol=RTOL, atol=ATOL, err_msg=f"gradient of argument {i}"
    )
  return {"in_specs": [str(s) for s in diff_specs + other_specs]}


def _compile_collectives(jax, mesh, context, fn, specs, argnums):
  from jax.sharding import NamedSharding

  args = [
    jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
    for shape, dtype, spec in specs
  ]
  with context():
    text = (
      jax.jit(jax.value_and_grad(fn, argnums=argnums)).lower(*args).compile().as_text()
    )
  return collectives(text)


def _check_hlo(jax, mesh, context, fn, specs, argnums, block, hlo, key):
  found = _compile_collectives(jax, mesh, context, fn, specs, argnums)
  hlo[key] = {
    "shapes": {"args": [[list(s), str(sp)] for s, _, sp in specs]},
    "block_elements": block,
    "collectives": found,
  }
  # moving ops: below a logits block; reductions: below one too (per-row
  # statistics, dx [N/dp, H] and the data-parallel dw [H, V/mp] all are)
  bad = too_large(found, block, moving_only=False)
  return not bad, {"too_large": bad, "count": len(found)}


def _flagged(jax, mesh, context, careless, specs, block, hlo, key):
  found = _compile_collectives(jax, mesh, context, careless, specs, 0)
  bad = too_large(found, block)
  hlo[key] = {"block_elements": block, "collectives": found}
  return bool(bad), {"flagged": bad}


def _scaling_out() -> str:
  """The documentation's "Scaling out" page (docs/scaling.md)."""
  import pathlib

  root = pathlib.Path(__file__).resolve().parents[1]
  return (root / "docs" / "scaling.md").read_text()


def _readme_table(hlo: dict):
  """The README's table of collectives adds up to what the HLO has: the same
  bytes per function and mesh axis (XLA may combine all-reduces differently
  from one version to the next, so rows are not compared one to one)."""
  readme: dict = {}
  fn = None
  for line in _scaling_out().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("|") or len(cells) != 5 or cells[1] in ("collective", "---"):
      continue
    fn = cells[0].strip("`") or fn
    number, unit = cells[4].split()
    nbytes = float(number) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(unit)
    readme[fn, cells[2]] = readme.get((fn, cells[2]), 0) + nbytes
  over = {DP: "data", MP: "model", DP * MP: "all", 0: "all"}
  compiled: dict = {}
  for key, entry in hlo.items():
    for c in entry["collectives"]:
      k = (key.split(": ", 1)[1], over.get(c["devices"], "?"))
      compiled[k] = compiled.get(k, 0) + c["bytes"]
  ok = readme.keys() == compiled.keys() and all(
    math.isclose(readme[k], compiled[k], rel_tol=1e-3) for k in readme
  )
  totals = [
    {f"{f} over {a}": _size(int(b)) for (f, a), b in sorted(d.items())}
    for d in (readme, compiled)
  ]
  return ok, {"readme": totals[0], "hlo": totals[1]}


def _readme_example(jax, np):
  """The README's "Scaling out" example runs as written."""
  code = re.search(r"```python\n(.*?)```", _scaling_out(), re.S).group(1)
  scope: dict = {}
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(code, "Scaling out example", "exec"), scope)
  spec = scope["params"]["w_out"].sharding.spec
  ok = tuple(spec) == (None, "model") and bool(np.isfinite(scope["loss"]))
  return ok, {"printed": printed.getvalue(), "w_out": str(spec)}


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
