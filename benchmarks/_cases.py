"""The benchmark cases: each pits jaxsmx against its peers at one size."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsmx

from ._timing import Contender, interleaved_medians, temp_bytes


@dataclasses.dataclass
class Row:
  """One measured comparison: ours against one peer."""

  case: str
  size: str
  peer: str
  t_ours: float
  t_peer: float
  target: float | None
  mem_ours: int | None = None
  mem_peer: int | None = None
  mem_target: float | None = None
  t_limit: float | None = None
  limit_name: str = ""
  # gradient error against float64, max |g - g64| / max |g64| (16-bit rows)
  err_ours: float | None = None
  err_peer: float | None = None

  @property
  def ratio(self) -> float:
    return self.t_ours / self.t_peer

  @property
  def mem_ratio(self) -> float | None:
    if self.mem_ours is None or not self.mem_peer:
      return None
    return self.mem_ours / self.mem_peer

  @property
  def met(self) -> bool:
    ok = self.target is None or self.ratio <= self.target
    if self.mem_target is not None and self.mem_ratio is not None:
      ok = ok and self.mem_ratio <= self.mem_target
    return ok


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def _logits(n: int, c: int, seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (n, c), jnp.float32) * 3.0


def _labels(n: int, c: int, seed: int = 1) -> jax.Array:
  return jax.random.randint(jax.random.key(seed), (n,), 0, c)


def _vag(loss: Callable, argnums=0) -> Callable:
  return jax.value_and_grad(loss, argnums=argnums)


def _exp_limit(x: jax.Array, runs: int) -> float:
  exp = Contender("exp", jax.jit(jnp.exp), (x,))
  return interleaved_medians([exp], runs)["exp"]


def _measure(
  case: str,
  size: str,
  ours: Contender,
  peers: list[Contender],
  runs: int,
  target: float | None,
  *,
  memory: bool,
  mem_target: float | None = None,
  t_limit: float | None = None,
  limit_name: str = "",
) -> list[Row]:
  times = interleaved_medians([ours, *peers], runs)
  mem_ours = temp_bytes(ours.jax_fn, *ours.args) if memory else None
  rows = []
  for i, p in enumerate(peers):
    mem_peer = None
    if memory and p.jax_fn is not None:
      mem_peer = temp_bytes(p.jax_fn, *p.args)
    rows.append(
      Row(
        case,
        size,
        p.name,
        times[ours.name],
        times[p.name],
        target,
        mem_ours,
        mem_peer,
        # the memory target is against the first (dense) peer
        mem_target if i == 0 else None,
        t_limit,
        limit_name,
      )
    )
  return rows


def _jax(name: str, fn: Callable, *args) -> Contender:
  return Contender(name, jax.jit(fn), args, jax_fn=fn)


def softmax_forward(n: int, c: int, runs: int) -> list[Row]:
  x = _logits(n, c)
  ours = _jax("jaxsmx", jaxsmx.softmax, x)
  peers = [_jax("jax.nn", jax.nn.softmax, x)]
  torch = _torch()
  if torch is not None:
    xt = torch.from_numpy(np.asarray(x))

    def torch_softmax(t):
      with torch.no_grad():
        return torch.softmax(t, -1)

    peers.append(Contender("torch", torch_softmax, (xt,)))
  return _measure(
    "softmax forward",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    1.05,
    memory=False,
    t_limit=_exp_limit(x, runs),
    limit_name="exp pass",
  )


def log_softmax_vag(n: int, c: int, runs: int) -> list[Row]:
  x, t = _logits(n, c), _logits(n, c, seed=2)

  def loss(f):
    return lambda x, t: jnp.sum(f(x) * t)

  ours = _jax("jaxsmx", _vag(loss(jaxsmx.log_softmax)), x, t)
  peers = [_jax("jax.nn", _vag(loss(jax.nn.log_softmax)), x, t)]
  return _measure(
    "log_softmax value_and_grad",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    1.00,
    memory=True,
    t_limit=_exp_limit(x, runs),
    limit_name="exp pass",
  )


def integer_ce_vag(n: int, c: int, runs: int) -> list[Row]:
  x, y = _logits(n, c), _labels(n, c)
  ours = _jax(
    "jaxsmx",
    _vag(lambda x, y: jaxsmx.softmax_cross_entropy_with_integer_labels(x, y).mean()),
    x,
    y,
  )
  peers = [
    _jax(
      "optax",
      _vag(lambda x, y: optax.softmax_cross_entropy_with_integer_labels(x, y).mean()),
      x,
      y,
    )
  ]
  torch = _torch()
  if torch is not None:
    import torch.nn.functional as F

    xt = torch.from_numpy(np.asarray(x))
    yt = torch.from_numpy(np.asarray(y)).long()

    def torch_ce(x, y):
      x = x.detach().requires_grad_()
      loss = F.cross_entropy(x, y)
      loss.backward()
      return loss, x.grad

    peers.append(Contender("torch", torch_ce, (xt, yt)))
  return _measure(
    "integer-label CE value_and_grad",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    1.00,
    memory=True,
    t_limit=_exp_limit(x, runs),
    limit_name="exp pass",
  )


def soft_ce_vag(n: int, c: int, runs: int) -> list[Row]:
  x = _logits(n, c)
  y = jax.nn.softmax(_logits(n, c, seed=3))
  ours = _jax(
    "jaxsmx", _vag(lambda x, y: jaxsmx.softmax_cross_entropy(x, y).mean()), x, y
  )
  peers = [
    _jax("optax", _vag(lambda x, y: optax.softmax_cross_entropy(x, y).mean()), x, y)
  ]
  return _measure(
    "soft-label CE value_and_grad",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    0.55,
    memory=True,
    t_limit=_exp_limit(x, runs),
    limit_name="exp pass",
  )


def _autodiff_entropy(z):
  return -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), -1)


def softmax_entropy_vag(n: int, c: int, runs: int) -> list[Row]:
  x = _logits(n, c)
  ours = _jax("jaxsmx", _vag(lambda z: jaxsmx.softmax_entropy(z).mean()), x)
  peers = [
    _jax(
      "autodiff -sum(softmax*log_softmax)",
      _vag(lambda z: _autodiff_entropy(z).mean()),
      x,
    )
  ]
  return _measure(
    "softmax_entropy value_and_grad",
    f"{n}x{c}",
    ours,
    peers,
    runs,
    0.60,
    memory=True,
    t_limit=_exp_limit(x, runs),
    limit_name="exp pass",
  )


def linear_ce_vag(n: int, h: int, v: int, runs: int) -> list[Row]:
  k1, k2 = jax.random.split(jax.random.key(4))
  x = jax.random.normal(k1, (n, h), jnp.float32)
  w = jax.random.normal(k2, (h, v), jnp.float32) / np.sqrt(h)
  y = _labels(n, v)
  both = (0, 1)
  ours = _jax(
    "jaxsmx",
    _vag(lambda x, w, y: jaxsmx.linear_softmax_cross_entropy(x, w, y).mean(), both),
    x,
    w,
    y,
  )
  peers = [
    _jax(
      "dense optax on x @ w",
      _vag(
        lambda x, w, y: optax.softmax_cross_entropy_with_integer_labels(
          x @ w, y
        ).mean(),
        both,
      ),
      x,
      w,
      y,
    )
  ]
  try:
    import jax_cce
  except ImportError:
    jax_cce = None
  if jax_cce is not None:
    wt = jnp.asarray(w.T)
    peers.append(
      _jax(
        "jax-cce",
        _vag(lambda x, wt, y: jax_cce.linear_cross_entropy(x, wt, y), both),
        x,
        wt,
        y,
      )
    )
  a = jax.random.normal(k1, (n, h), jnp.float32)
  matmul = Contender("matmul", jax.jit(lambda a, w: a @ w), (a, w))
  t_matmul = interleaved_medians([matmul], runs)["matmul"]
  return _measure(
    "fused linear CE value_and_grad",
    f"N={n} H={h} V={v}",
    ours,
    peers,
    runs,
    1.05,
    memory=True,
    mem_target=1 / 16,
    t_limit=3 * t_matmul,
    limit_name="3 matmuls",
  )


def linear_ce_reduced_vag(n: int, h: int, v: int, runs: int) -> list[Row]:
  """The reduced mode (reduction="mean"): dx and dw formed in the forward pass."""
  k1, k2 = jax.random.split(jax.random.key(4))
  x = jax.random.normal(k1, (n, h), jnp.float32)
  w = jax.random.normal(k2, (h, v), jnp.float32) / np.sqrt(h)
  y = _labels(n, v)
  both = (0, 1)
  ours = _jax(
    "jaxsmx",
    _vag(
      lambda x, w, y: jaxsmx.linear_softmax_cross_entropy(x, w, y, reduction="mean"),
      both,
    ),
    x,
    w,
    y,
  )
  peers = [
    _jax(
      "dense optax on x @ w",
      _vag(
        lambda x, w, y: optax.softmax_cross_entropy_with_integer_labels(
          x @ w, y
        ).mean(),
        both,
      ),
      x,
      w,
      y,
    )
  ]
  try:
    import jax_cce
  except ImportError:
    jax_cce = None
  if jax_cce is not None:
    wt = jnp.asarray(w.T)
    peers.append(
      _jax(
        "jax-cce",
        _vag(lambda x, wt, y: jax_cce.linear_cross_entropy(x, wt, y), both),
        x,
        wt,
        y,
      )
    )
  a = jax.random.normal(k1, (n, h), jnp.float32)
  matmul = Contender("matmul", jax.jit(lambda a, w: a @ w), (a, w))
  t_matmul = interleaved_medians([matmul], runs)["matmul"]
  return _measure(
    "reduced linear CE (mean) value_and_grad",
    f"N={n} H={h} V={v}",
    ours,
    peers,
    runs,
    1.00,
    memory=True,
    mem_target=1 / 16,
    t_limit=3 * t_matmul,
    limit_name="3 matmuls",
  )


def _family_vag(
  case: str,
  n: int,
  c: int,
  runs: int,
  ours: Callable,
  peer: Callable,
  peer_name: str,
  args: tuple,
  argnums=(0, 1),
) -> list[Row]:
  """value_and_grad of the mean loss, ours against one JAX peer."""

  def mean(f):
    return lambda *a: jnp.mean(f(*a))

  return _measure(
    case,
    f"{n}x{c}",
    _jax("jaxsmx", _vag(mean(ours), argnums), *args),
    [_jax(peer_name, _vag(mean(peer), argnums), *args)],
    runs,
    1.00,
    memory=True,
  )


def focal_vag(n: int, c: int, runs: int) -> list[Row]:
  x = _logits(n, c)
  y = (jax.random.uniform(jax.random.key(5), (n, c)) < 0.3).astype(jnp.float32)
  return _family_vag(
    "sigmoid_focal_loss value_and_grad",
    n,
    c,
    runs,
    lambda x, y: jaxsmx.sigmoid_focal_loss(x, y, alpha=0.25),
    lambda x, y: optax.losses.sigmoid_focal_loss(x, y, alpha=0.25),
    "optax",
    (x, y),
    argnums=0,
  )


def poly_vag(n: int, c: int, runs: int) -> list[Row]:
  x = _logits(n, c)
  y = jax.nn.softmax(_logits(n, c, seed=3))
  return _family_vag(
    "poly_loss_cross_entropy value_and_grad",
    n,
    c,
    runs,
    jaxsmx.poly_loss_cross_entropy,
    optax.losses.poly_loss_cross_entropy,
    "optax",
    (x, y),
    argnums=0,
  )


def kl_log_targets_vag(n: int, c: int, runs: int) -> list[Row]:
  lq = jax.nn.log_softmax(_logits(n, c))
  lt = jax.nn.log_softmax(_logits(n, c, seed=3))
  return _family_vag(
    "kl_divergence_with_log_targets value_and_grad",
    n,
    c,
    runs,
    jaxsmx.kl_divergence_with_log_targets,
    optax.losses.kl_divergence_with_log_targets,
    "optax",
    (lq, lt),
    argnums=0,
  )


def convex_kl_vag(n: int, c: int, runs: int) -> list[Row]:
  lq = jax.nn.log_softmax(_logits(n, c))
  t = 2.0 * jax.nn.softmax(_logits(n, c, seed=3))
  return _family_vag(
    "convex_kl_divergence value_and_grad",
    n,
    c,
    runs,
    jaxsmx.convex_kl_divergence,
    optax.losses.generalized_kl_divergence,
    "optax",
    (lq, t),
    argnums=0,
  )


def bce_pos_weight_vag(n: int, c: int, runs: int) -> list[Row]:
  """pos_weight has no JAX peer: against the plain autodiff formula and torch."""
  x = _logits(n, c)
  y = (jax.random.uniform(jax.random.key(5), (n, c)) < 0.3).astype(jnp.float32)
  w = jnp.linspace(0.5, 4.0, c, dtype=jnp.float32)

  def autodiff(x, y, w):
    return -w * y * jax.nn.log_sigmoid(x) - (1 - y) * jax.nn.log_sigmoid(-x)

  rows = _family_vag(
    "sigmoid BCE pos_weight value_and_grad",
    n,
    c,
    runs,
    lambda x, y, w: jaxsmx.sigmoid_binary_cross_entropy(x, y, pos_weight=w),
    autodiff,
    "autodiff of the formula",
    (x, y, w),
    argnums=0,
  )
  torch = _torch()
  if torch is None:
    return rows
  import torch.nn.functional as F

  xt, yt, wt = (torch.from_numpy(np.array(a)) for a in (x, y, w))

  def torch_bce(x, y, w):
    x = x.detach().requires_grad_()
    loss = F.binary_cross_entropy_with_logits(x, y, pos_weight=w)
    loss.backward()
    return loss, x.grad

  ours = _jax(
    "jaxsmx",
    _vag(
      lambda x, y, w: jnp.mean(jaxsmx.sigmoid_binary_cross_entropy(x, y, pos_weight=w))
    ),
    x,
    y,
    w,
  )
  return rows + _measure(
    "sigmoid BCE pos_weight value_and_grad",
    f"{n}x{c}",
    ours,
    [Contender("torch", torch_bce, (xt, yt, wt))],
    runs,
    1.00,
    memory=False,
  )


def integer_ce_class_weights_vag(n: int, c: int, runs: int) -> list[Row]:
  """torch's weighted mean (weight=, label_smoothing=0.1): ours, autodiff of
  the formula in JAX (no JAX library has class weights) and torch."""
  x, y = _logits(n, c), _labels(n, c)
  w = jnp.linspace(0.5, 2.0, c, dtype=jnp.float32)
  alpha = 0.1

  def ours(x, y, w):
    losses = jaxsmx.softmax_cross_entropy_with_integer_labels(
      x, y, label_smoothing=alpha, class_weights=w
    )
    return jnp.sum(losses) / jnp.sum(w[y])

  def autodiff(x, y, w):
    lp = jax.nn.log_softmax(x)
    nll = -jnp.take_along_axis(lp, y[:, None], 1)[:, 0] * w[y]
    smooth = -jnp.sum(lp * w, -1) / c
    return jnp.sum((1 - alpha) * nll + alpha * smooth) / jnp.sum(w[y])

  peers = [_jax("autodiff of the formula", _vag(autodiff), x, y, w)]
  torch = _torch()
  if torch is not None:
    import torch.nn.functional as F

    xt, wt = (torch.from_numpy(np.array(a)) for a in (x, w))
    yt = torch.from_numpy(np.array(y)).long()

    def torch_ce(x, y, w):
      x = x.detach().requires_grad_()
      loss = F.cross_entropy(x, y, weight=w, label_smoothing=alpha)
      loss.backward()
      return loss, x.grad

    peers.append(Contender("torch", torch_ce, (xt, yt, wt)))
  return _measure(
    "integer-label CE class_weights value_and_grad",
    f"{n}x{c}",
    _jax("jaxsmx", _vag(ours), x, y, w),
    peers,
    runs,
    1.00,
    memory=True,
  )


FAMILY = (
  focal_vag,
  poly_vag,
  kl_log_targets_vag,
  convex_kl_vag,
  bce_pos_weight_vag,
  integer_ce_class_weights_vag,
)


def linear_ce_class_weights_vag(n: int, h: int, v: int, runs: int) -> list[Row]:
  """The reduced mode with class weights and smoothing (torch's weighted
  mean): ours against dense autodiff of the formula on x @ w, and torch."""
  k1, k2 = jax.random.split(jax.random.key(4))
  x = jax.random.normal(k1, (n, h), jnp.float32)
  w = jax.random.normal(k2, (h, v), jnp.float32) / np.sqrt(h)
  y = _labels(n, v)
  cw = jnp.linspace(0.5, 2.0, v, dtype=jnp.float32)
  alpha, both = 0.1, (0, 1)

  def ours(x, w, y, cw):
    return jaxsmx.linear_softmax_cross_entropy(
      x, w, y, reduction="mean", label_smoothing=alpha, class_weights=cw
    )

  def dense(x, w, y, cw):
    lp = jax.nn.log_softmax(x @ w)
    nll = -jnp.take_along_axis(lp, y[:, None], 1)[:, 0] * cw[y]
    smooth = -jnp.sum(lp * cw, -1) / v
    return jnp.sum((1 - alpha) * nll + alpha * smooth) / jnp.sum(cw[y])

  peers = [_jax("dense autodiff on x @ w", _vag(dense, both), x, w, y, cw)]
  torch = _torch()
  if torch is not None:
    import torch.nn.functional as F

    xt, wt, cwt = (torch.from_numpy(np.array(a)) for a in (x, w, cw))
    yt = torch.from_numpy(np.array(y)).long()

    def torch_ce(x, w, y, cw):
      x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
      loss = F.cross_entropy(x @ w, y, weight=cw, label_smoothing=alpha)
      loss.backward()
      return loss, x.grad, w.grad

    peers.append(Contender("torch", torch_ce, (xt, wt, yt, cwt)))
  return _measure(
    "reduced linear CE (mean) class_weights value_and_grad",
    f"N={n} H={h} V={v}",
    _jax("jaxsmx", _vag(ours, both), x, w, y, cw),
    peers,
    runs,
    1.00,
    memory=True,
  )


GEMMA_2B = (8192, 2304, 256000)  # tokens per batch, H, V (Wijmans et al.)


def gemma_memory_table(n: int = 8192, h: int = 2304, v: int = 256000) -> str:
  """Compiled temp memory (outputs excluded) at Gemma 2 (2B) scale, bfloat16:
  compile only, nothing runs. A markdown table with the paper's figures."""
  bf16 = jnp.bfloat16
  x = jax.ShapeDtypeStruct((n, h), bf16)
  w = jax.ShapeDtypeStruct((h, v), bf16)
  y = jax.ShapeDtypeStruct((n,), jnp.int32)

  def dense(x, w, y):
    z = jnp.matmul(x, w, preferred_element_type=jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

  def fused(reduction):
    def loss(x, w, y):
      out = jaxsmx.linear_softmax_cross_entropy(x, w, y, reduction=reduction)
      return jnp.mean(out.astype(jnp.float32))

    return loss

  def mib(f, grad):
    f = jax.value_and_grad(f, (0, 1)) if grad else f
    m = jax.jit(f).lower(x, w, y).compile().memory_analysis()
    return m.temp_size_in_bytes / 2**20, m.output_size_in_bytes / 2**20

  rows = [
    ("dense optax on x @ w (logits in float32)", dense),
    ('jaxsmx fused, reduction="none" (then .mean())', fused("none")),
    ('jaxsmx fused, reduction="mean"', fused("mean")),
  ]
  lines = [
    f"N={n} tokens, H={h}, V={v}, bfloat16 x and w; XLA:CPU"
    " `memory_analysis()` of the compiled program (nothing is run).\n",
    "| | loss only, temp MiB | value_and_grad w.r.t. x and w, temp MiB (outputs MiB) |",
    "|---|---|---|",
  ]
  for name, f in rows:
    loss_temp, _ = mib(f, False)
    vg_temp, vg_out = mib(f, True)
    lines.append(f"| {name} | {loss_temp:,.0f} | {vg_temp:,.0f} ({vg_out:,.0f}) |")
  lines.append(
    "| Cut Cross-Entropy paper, Gemma 2 (2B), 8,192 tokens: baseline -> CCE"
    " (Wijmans et al., ICLR 2025, arXiv:2411.09009; GPU) | 24 GB -> 1 MB"
    " (loss) | 28 GB -> 1 GB"
    " (classifier head, loss + gradient) |"
  )
  return "\n".join(lines) + "\n"


def matmul_gflops(n: int, h: int, v: int, runs: int) -> float:
  a = jnp.ones((n, h), jnp.float32)
  b = jnp.ones((h, v), jnp.float32)
  matmul = Contender("matmul", jax.jit(lambda a, b: a @ b), (a, b))
  t = interleaved_medians([matmul], runs)["matmul"]
  return 2 * n * h * v / t / 1e9
