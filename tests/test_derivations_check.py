"""derivations.check_vjp: a user's own custom_vjp checked like jaxsmx's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import sympy as sp

from derivations import DefinitionError, check_vjp
from derivations.engine import k, n, y, z

EPS = 0.5
S = sp.Sum(sp.exp(z[k]), (k, 1, n))
# poly-1 loss on soft labels: CE + eps (1 - sum_k y_k a_k)
POLY1 = -sp.Sum(y[k] * (z[k] - sp.log(S)), (k, 1, n)) + EPS * (
  1 - sp.Sum(y[k] * sp.exp(z[k]) / S, (k, 1, n))
)


def _labels(rng, size):
  return rng.uniform(0.1, 1.0, size)


def _poly1(wrong: bool):
  @jax.custom_vjp
  def loss(z_, y_):
    a = jax.nn.softmax(z_)
    return -jnp.sum(y_ * jax.nn.log_softmax(z_)) + EPS * (1 - jnp.sum(y_ * a))

  def fwd(z_, y_):
    return loss(z_, y_), (z_, y_)

  def bwd(res, g):
    z_, y_ = res
    a = jax.nn.softmax(z_)
    pt = 0.0 if wrong else jnp.sum(y_ * a)  # wrong: drops the softmax's -a_j p_t
    dz = a * jnp.sum(y_) - y_ - EPS * a * (y_ - pt)
    dy = -jax.nn.log_softmax(z_) - EPS * a
    return g * dz, g * dy

  loss.defvjp(fwd, bwd)
  return loss


def test_a_right_rule_passes_every_step():
  result = check_vjp(_poly1(False), POLY1, (z, y), draw={y: _labels})
  assert result.ok, result.to_markdown()
  methods = [s.method for s in result.steps]
  assert any(m == "general n: closed form" for m in methods)
  assert any("Matrix.jacobian" in m for m in methods)
  md = result.to_markdown()
  lines = md.splitlines()
  assert sum(line.startswith("pass ") for line in lines) == len(result.steps)
  assert "**Verdict: pass.**" in lines
  assert result.to_latex().startswith(r"\section{")


def test_a_subtly_wrong_rule_is_caught_and_located():
  result = check_vjp(_poly1(True), POLY1, (z, y), draw={y: _labels})
  assert not result.ok
  (bad,) = result.failures
  assert bad.method.startswith("z: jax.vjp")
  assert "entry" in bad.detail and "n=" in bad.detail
  lines = result.to_markdown().splitlines()
  assert "**Verdict: FAIL.**" in lines
  assert any(line.startswith("FAIL z: jax.vjp") for line in lines)


def test_vector_outputs_temperature_softmax():
  temp = 2.0
  i = sp.Symbol("i", integer=True, positive=True)

  def definition(idx):
    return sp.exp(z[idx] / temp) / sp.Sum(sp.exp(z[k] / temp), (k, 1, n))

  result = check_vjp(lambda x: jax.nn.softmax(x / temp), definition, (z,))
  assert result.ok, result.to_markdown()
  del i


def test_unsupported_construct_explains_the_fix():
  with pytest.raises(DefinitionError, match=r"Max.*Fix"):
    check_vjp(lambda x: jnp.max(x), sp.Max(z[1], z[2]), (z,))


def test_shape_mismatch_explains_the_fix():
  with pytest.raises(DefinitionError, match=r"shape.*Fix"):
    check_vjp(lambda x: jax.nn.softmax(x), sp.Sum(z[k], (k, 1, n)), (z,))


def test_unknown_symbol_explains_the_fix():
  gamma = sp.Symbol("gamma")
  with pytest.raises(DefinitionError, match="params"):
    check_vjp(lambda x: jnp.sum(x), gamma * sp.Sum(z[k], (k, 1, n)), (z,))
