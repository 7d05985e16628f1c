"""Non-arrays get the library's error at the public entry, for every public
function and every array argument.

Every name in ``jaxsmx.__all__`` is tested, with each of its array arguments
(those annotated ``ArrayLike`` in its signature): a new public function is
covered as soon as it is exported. Its valid call takes each argument's value
from ``BY_NAME`` (with ``OVERRIDES`` where a name means another array), and a
test fails, naming the argument, until every argument has one. Every
bad value below is then passed in place of each argument, by keyword and,
where the parameter allows it, by position, and the error must name the
function and the argument, show what arrived and say what to pass, before
JAX or NumPy convert anything.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import jaxsmx

B, C, H = 3, 4, 2
_r = np.random.default_rng(0)
_Z = _r.normal(size=(B, C)).astype(np.float32)
_P = np.full((B, C), 1 / C, np.float32)
_LABELS = np.array([0, 3, 1], np.int32)
_MASK = np.ones((B, C), bool)
_X = _r.normal(size=(B, H)).astype(np.float32)
_W = _r.normal(size=(H, C)).astype(np.float32)


def _array_params(fn) -> dict[str, inspect.Parameter]:
  """The array arguments of a public function, read from its signature."""
  return {
    name: p
    for name, p in inspect.signature(fn).parameters.items()
    if "ArrayLike" in str(p.annotation)
  }


# A valid value for each array argument, by its name: every public function
# is read from jaxsmx.__all__ and its array arguments from its signature, so a
# new function is tested as soon as it is exported. A name not listed here
# fails test_every_public_function_and_array_argument_has_a_value.
BY_NAME: dict[str, object] = {
  "x": _Z,
  "a": _Z,
  "logits": _Z,
  "b": _P,
  "probs": _P,
  "p": _P,
  "q": _P,
  "labels": _P,  # soft labels; integer-label functions override it below
  "targets": _P,
  "log_predictions": np.log(_P),
  "log_targets": np.log(_P),
  "where": _MASK,
  "weights": np.ones(B, np.float32),
  "pos_weight": np.ones(C, np.float32),
  "class_weights": np.ones(C, np.float32),
  "alpha": 0.25,
  "gamma": 2.0,
  "epsilon": 2.0,
}
# where the same name means another array
OVERRIDES: dict[str, dict[str, object]] = {
  "softmax_cross_entropy_with_integer_labels": {"labels": _LABELS},
  "linear_softmax_cross_entropy": {
    "x": _X,
    "w": _W,
    "labels": _LABELS,
    "bias": np.zeros(C, np.float32),
    "where": np.ones(C, bool),
  },
}


def _valid_call(fn_name: str) -> dict[str, object]:
  """One valid call of a public function: a value for each array argument."""
  values = {**BY_NAME, **OVERRIDES.get(fn_name, {})}
  params = _array_params(getattr(jaxsmx, fn_name))
  return {name: values[name] for name in params if name in values}


class _NoDtype:
  def __repr__(self) -> str:
    return "<_NoDtype>"


# (what is passed, a piece of the message that shows what arrived)
BAD = [
  pytest.param("logits", "the str 'logits'", id="str"),
  pytest.param(b"\x00\x01", "the bytes", id="bytes"),
  pytest.param(
    [[1.0, 2.0], [3.0]], "ragged nested list, [[1.0, 2.0], [3.0]]", id="ragged"
  ),
  pytest.param([[1.0, 2.0], 3.0], "ragged nested list", id="ragged-depth"),
  pytest.param([1.0, None], "a list holding None", id="list-with-None"),
  pytest.param([["a", "b"]], "a list holding str 'a'", id="list-of-str"),
  pytest.param({"a": 1.0}, "a dict, {'a': 1.0}", id="dict"),
  pytest.param({1.0, 2.0}, "a set", id="set"),
  pytest.param(
    _NoDtype(), "_NoDtype, <_NoDtype>, which has no numeric dtype", id="object"
  ),
  pytest.param(np.array([1.0, None], dtype=object), "dtype object", id="object-array"),
  pytest.param(np.array(["0", "1"]), "dtype <U1", id="str-array"),
]


def _cases():
  for fn_name in jaxsmx.__all__:
    for arg in _array_params(getattr(jaxsmx, fn_name)):
      yield fn_name, arg


CASES = list(_cases())
VALID = {fn_name: _valid_call(fn_name) for fn_name in jaxsmx.__all__}


def test_every_public_function_and_array_argument_has_a_value():
  missing = {
    fn_name: sorted(set(_array_params(getattr(jaxsmx, fn_name))) - set(valid))
    for fn_name, valid in VALID.items()
  }
  missing = {k: v for k, v in missing.items() if v}
  assert not missing, f"add a valid value for these arguments to BY_NAME: {missing}"
  assert set(VALID) == set(jaxsmx.__all__) and len(CASES) >= 2 * len(VALID)


def _value(out) -> np.ndarray:
  return np.asarray(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("fn_name", sorted(VALID))
def test_the_valid_calls_run(fn_name):
  fn = getattr(jaxsmx, fn_name)
  out = _value(fn(**VALID[fn_name]))
  assert np.all(np.isfinite(out))
  # the optional ones take None, and nested lists of numbers are arrays
  optional = [n for n, p in _array_params(fn).items() if p.default is None]
  fn(**{**VALID[fn_name], **dict.fromkeys(optional)})
  as_lists = {k: np.asarray(v).tolist() for k, v in VALID[fn_name].items()}
  np.testing.assert_allclose(_value(fn(**as_lists)), out, rtol=1e-6)


def _check_message(err: TypeError, fn_name: str, arg: str, shows: str) -> None:
  msg = str(err)
  assert msg.startswith(f"{fn_name}: {arg} must be an array"), msg
  assert shows in msg, msg
  assert any(fix in msg for fix in ("Pass ", "Pad ", "Convert ")), msg
  # nothing from inside JAX or NumPy leaks into the message
  for leak in ("_checked", "static_argnums", "inhomogeneous", "jnp.array", "valid JAX"):
    assert leak not in msg, msg


@pytest.mark.parametrize(("bad", "shows"), BAD)
@pytest.mark.parametrize(("fn_name", "arg"), CASES)
def test_non_array_gets_the_library_error(fn_name, arg, bad, shows):
  fn = getattr(jaxsmx, fn_name)
  with pytest.raises(TypeError) as info:
    fn(**{**VALID[fn_name], arg: bad})
  _check_message(info.value, fn_name, arg, shows)


@pytest.mark.parametrize(("fn_name", "arg"), CASES)
def test_none_gets_the_library_error_where_an_array_is_required(fn_name, arg):
  fn = getattr(jaxsmx, fn_name)
  param = _array_params(fn)[arg]
  if param.default is None:  # optional: None means "not given"
    fn(**{**VALID[fn_name], arg: None})
    return
  with pytest.raises(TypeError) as info:
    fn(**{**VALID[fn_name], arg: None})
  _check_message(info.value, fn_name, arg, "got None")


@pytest.mark.parametrize(("fn_name", "arg"), CASES)
def test_positional_arguments_are_checked_too(fn_name, arg):
  fn = getattr(jaxsmx, fn_name)
  params = list(inspect.signature(fn).parameters.values())
  positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
  if arg not in positional:
    assert _array_params(fn)[arg].kind is inspect.Parameter.KEYWORD_ONLY
    return
  valid = VALID[fn_name]
  # every parameter up to and including `arg` by position, the rest by keyword
  upto = positional[: positional.index(arg) + 1]
  defaults = {p.name: p.default for p in params}
  args = [valid.get(n, defaults[n]) for n in upto]
  args[-1] = "abc"
  rest = {k: v for k, v in valid.items() if k not in upto}
  with pytest.raises(TypeError) as info:
    fn(*args, **rest)
  _check_message(info.value, fn_name, arg, "the str 'abc'")


def test_the_error_comes_before_jax_conversion_under_jit():
  """A bad value closed over inside a jitted function gets the same error."""
  import jax

  with pytest.raises(TypeError, match=r"^softmax: x must be an array"):
    jax.jit(lambda: jaxsmx.softmax(None))()
  # tracers pass unchanged
  assert jax.jit(jaxsmx.softmax)(_Z).shape == (B, C)
