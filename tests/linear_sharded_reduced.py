"""Reduced linear CE on 8 simulated CPU devices (run by tests/test_linear.py).

Values and gradients of reduction="sum" and "mean" with weights, with the rows
of x split over "data" and the columns of w over "model", under automatic
sharding, explicit sharding and inside a user's shard_map, against one device.
Prints "ok" or raises.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsmx

N, H, V = 16, 8, 128
r = np.random.default_rng(0)
x = r.standard_normal((N, H)).astype(np.float32)
w = (0.5 * r.standard_normal((H, V))).astype(np.float32)
b = r.standard_normal(V).astype(np.float32)
labels = r.integers(0, V, N).astype(np.int32)
labels[[1, 6]] = -100
where = r.random(V) > 0.2
where[labels[labels >= 0]] = True
omega = r.random(N).astype(np.float32)
opts = dict(
  where=where, ignore_index=-100, label_smoothing=0.1, z_loss=1e-3, softcap=5.0
)


def loss(reduction):
  def f(x, w, b, om, lab):
    return jaxsmx.linear_softmax_cross_entropy(
      x, w, lab, bias=b, weights=om, reduction=reduction, chunk_size=16, **opts
    )

  return jax.value_and_grad(f, (0, 1, 2, 3))


def close(got, want, what):
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(
      np.asarray(g), np.asarray(e), rtol=2e-5, atol=2e-6, err_msg=what
    )


specs = (P("data", None), P(None, "model"), P("model"), P("data"), P("data"))
args = (x, w, b, omega, labels)
for reduction in ("sum", "mean"):
  vg = loss(reduction)
  want = jax.jit(vg)(*args)
  for kind in (AxisType.Auto, AxisType.Explicit):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(kind, kind))
    put = [
      jax.device_put(a, NamedSharding(mesh, s))
      for a, s in zip(args, specs, strict=True)
    ]
    if kind == AxisType.Explicit:
      with jax.set_mesh(mesh):
        got = jax.jit(vg)(*put)
    else:
      got = jax.jit(vg)(*put)
    close(got, want, f"{reduction}, {kind}")
  # inside a user's shard_map: each device reduces its own rows; for "sum" the
  # psum of the device values and gradients is the one-device result
  if reduction == "sum":
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))

    def local(x, w, b, om, lab, vg=vg):
      value, grads = vg(x, w, b, om, lab)
      gx, gw, gb, gom = grads
      return jax.lax.psum(value, "data"), (gx, gw, gb, gom)

    mapped = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(P("data"), P(), P(), P("data"), P("data")),
      out_specs=(P(), (P("data"), P(), P(), P("data"))),
    )
    close(jax.jit(mapped)(*args), want, "sum inside shard_map")
print("ok")
