"""No public function puts a JAX effect into a program, value or gradient.

An effect (checkify's ErrorEffect, an ordered callback) turns off JAX's C++
dispatch fast path for the whole jitted program that contains it and stops
:mod:`jax.export` from serialising it. jaxsmx reports bad labels only when
asked (``check_labels=True``); by default the jaxpr of every function, with
every option (``tests/public_cases.py``), has no effect.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify
from public_cases import CASES

import jaxsmx


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_value_has_no_effect(case):
  assert jax.make_jaxpr(case.value)(*case.args).effects == set()


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_gradient_has_no_effect(case):
  assert jax.make_jaxpr(case.grad)(*case.args).effects == set()


def test_the_check_catches_an_effect():
  # the assertion above fails on a function that carries a check
  z, c = jnp.zeros((2, 3)), jnp.array([0, 1])

  def checked(z, c):
    checkify.debug_check(jnp.all(c >= 0), "negative label")
    return jaxsmx.softmax_cross_entropy_with_integer_labels(z, c)

  assert jax.make_jaxpr(checked)(z, c).effects != set()
  loss = jaxsmx.softmax_cross_entropy_with_integer_labels
  opted_in = lambda z, c: checkify.checkify(lambda z, c: loss(z, c, check_labels=True))(
    z, c
  )[1]
  assert jax.make_jaxpr(lambda z, c: loss(z, c, check_labels=True))(z, c).effects
  # functionalized, the opt-in check is an ordinary output again
  assert jax.make_jaxpr(opted_in)(z, c).effects == set()
