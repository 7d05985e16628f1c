"""Small-model cases, where per-call overhead is what a user feels.

* A jitted ``optax.sgd`` training step of an MLP (64 -> 128 -> C, batch 32)
  with jaxsmx's loss against the same step with optax's: the integer-label
  CE, and the fused linear CE as the last layer against optax's CE on
  ``h @ w + b``. An effect in the step's jaxpr (a checkify check, an ordered
  callback) turns off JAX's C++ dispatch fast path and costs 50-200 us per
  step here; the target is 1.05.
* Every public function called eagerly at 32 x 10 against its peer (jax.nn,
  optax, or the plain JAX formula where neither has one): one compiled call
  each, as jax.nn's functions are; the target is 1.2.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsmx

from ._cases import Row, _measure
from ._timing import Contender

TRAIN_TARGET = 1.05
EAGER_TARGET = 1.2


def _mlp_params(classes: int, seed: int = 0) -> dict[str, jax.Array]:
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {
    "w1": jax.random.normal(k1, (64, 128), jnp.float32) / 8.0,
    "b1": jnp.zeros((128,), jnp.float32),
    "w2": jax.random.normal(k2, (128, classes), jnp.float32) / np.sqrt(128.0),
    "b2": jnp.zeros((classes,), jnp.float32),
  }


def _hidden(params, x):
  return jax.nn.relu(x @ params["w1"] + params["b1"])


def _dense_loss(ce: Callable) -> Callable:
  def loss(params, x, y):
    logits = _hidden(params, x) @ params["w2"] + params["b2"]
    return ce(logits, y).mean()

  return loss


def _linear_loss(params, x, y):
  h = _hidden(params, x)
  return jaxsmx.linear_softmax_cross_entropy(
    h, params["w2"], y, bias=params["b2"]
  ).mean()


def _train_step(loss: Callable, opt: optax.GradientTransformation) -> Callable:
  @jax.jit
  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  return step


def train_step(classes: int, runs: int, *, batch: int = 32) -> list[Row]:
  """The MLP step with each jaxsmx loss against the same step with optax's."""
  params = _mlp_params(classes)
  opt = optax.sgd(0.1)
  state = opt.init(params)
  kx, ky = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (batch, 64), jnp.float32)
  y = jax.random.randint(ky, (batch,), 0, classes)
  args = (params, state, x, y)
  peer = Contender(
    "optax CE on h @ w + b",
    _train_step(_dense_loss(optax.softmax_cross_entropy_with_integer_labels), opt),
    args,
  )
  size = f"B={batch} 64-128-{classes}"
  rows = []
  for case, loss in [
    ("MLP sgd step, integer-label CE", _dense_loss(_ice)),
    ("MLP sgd step, linear CE last layer", _linear_loss),
  ]:
    ours = Contender("jaxsmx", _train_step(loss, opt), args)
    rows += _measure(case, size, ours, [peer], runs, TRAIN_TARGET, memory=False)
  return rows


def _ice(logits, labels):
  return jaxsmx.softmax_cross_entropy_with_integer_labels(logits, labels)


def _eager_pairs(n: int, c: int) -> list[tuple[str, Callable, Callable, tuple]]:
  """(name, jaxsmx function, peer name and function, arguments)."""
  r = np.random.default_rng(0)
  z = jnp.asarray(r.normal(size=(n, c)), jnp.float32)
  p = jax.nn.softmax(jnp.asarray(r.normal(size=(n, c)), jnp.float32))
  q = jax.nn.softmax(z)
  lq = jnp.log(q)
  y = jnp.asarray(r.integers(0, c, size=n), jnp.int32)
  x = jnp.asarray(r.normal(size=(n, 16)), jnp.float32)
  w = jnp.asarray(r.normal(size=(16, c)) / 4.0, jnp.float32)
  entr = jax.scipy.special.entr
  return [
    ("softmax", jaxsmx.softmax, ("jax.nn", jax.nn.softmax), (z,)),
    ("log_softmax", jaxsmx.log_softmax, ("jax.nn", jax.nn.log_softmax), (z,)),
    (
      "logsumexp",
      lambda z: jaxsmx.logsumexp(z, axis=-1),
      ("jax.nn", lambda z: jax.nn.logsumexp(z, axis=-1)),
      (z,),
    ),
    (
      "entropy",
      jaxsmx.entropy,
      ("sum(jax.scipy entr)", lambda p: jnp.sum(entr(p), -1)),
      (p,),
    ),
    (
      "softmax_entropy",
      jaxsmx.softmax_entropy,
      (
        "-sum(softmax * log_softmax)",
        lambda z: -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), -1),
      ),
      (z,),
    ),
    (
      "cross_entropy",
      jaxsmx.cross_entropy,
      ("-sum(p * log q)", lambda p, q: -jnp.sum(p * jnp.log(q), -1)),
      (p, q),
    ),
    ("kl_divergence", jaxsmx.kl_divergence, ("optax", optax.kl_divergence), (lq, p)),
    (
      "softmax_cross_entropy",
      jaxsmx.softmax_cross_entropy,
      ("optax", optax.softmax_cross_entropy),
      (z, p),
    ),
    (
      "softmax_cross_entropy_with_integer_labels",
      jaxsmx.softmax_cross_entropy_with_integer_labels,
      ("optax", optax.softmax_cross_entropy_with_integer_labels),
      (z, y),
    ),
    (
      "sigmoid_binary_cross_entropy",
      jaxsmx.sigmoid_binary_cross_entropy,
      ("optax", optax.sigmoid_binary_cross_entropy),
      (z, p),
    ),
    (
      "linear_softmax_cross_entropy",
      jaxsmx.linear_softmax_cross_entropy,
      (
        "optax on x @ w",
        lambda x, w, y: optax.softmax_cross_entropy_with_integer_labels(x @ w, y),
      ),
      (x, w, y),
    ),
  ]


def eager_calls(
  runs: int, *, n: int = 32, c: int = 10, only: str | None = None
) -> list[Row]:
  """Each public function called eagerly (no jax.jit around it) vs its peer."""
  rows = []
  for name, ours, (peer_name, peer), args in _eager_pairs(n, c):
    if only is not None and only not in name:
      continue
    rows += _measure(
      f"eager {name}",
      f"{n}x{c}",
      Contender("jaxsmx", ours, args),
      [Contender(peer_name, peer, args)],
      runs,
      EAGER_TARGET,
      memory=False,
    )
  return rows


def _main() -> None:
  """``python -m benchmarks._small [train|eager] [name filter]``: print ratios."""
  import sys

  what = sys.argv[1] if len(sys.argv) > 1 else "all"
  runs = 15
  rows = []
  if what in ("all", "train"):
    for classes in (10, 1000):
      rows += train_step(classes, runs)
  if what in ("all", "eager"):
    rows += eager_calls(runs, only=sys.argv[2] if len(sys.argv) > 2 else None)
  for r in rows:
    print(
      f"{r.case:52s} {r.size:16s} vs {r.peer:28s} ours {r.t_ours * 1e6:8.1f} us"
      f"  peer {r.t_peer * 1e6:8.1f} us  ratio {r.ratio:5.2f}"
      f" {'ok' if r.met else 'MISSED'}"
    )


if __name__ == "__main__":
  _main()
