"""Shared test helpers: float64 references, dtypes, transformations.

Only light imports here. Tests that need optax, scipy or torch import them
themselves (torch with ``pytest.importorskip``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# ---------------------------------------------------------------------------
# scheduling under pytest-xdist (make test: -n 2 --dist loadfile)

# A worker takes whole files, so a module-scoped fixture that builds
# something expensive (the derivation report in test_derivations.py, a wheel
# and its venv in test_wheel.py) is built once per run. (--dist loadgroup
# would allow finer units, but pytest-xdist 3.8 cannot group under pytest 9:
# it renames node ids through an attribute pytest no longer reads.)

# The files that take longest start first (make test passes
# --no-loadscope-reorder, or xdist would order files by their number of
# tests), so that the two workers finish together instead of one waiting on
# a long file picked up last. Names, not markers, so that no test file has to
# carry a scheduling hint; one that no longer exists changes nothing.
LONG_FIRST = (
  "tests/test_derivations.py",
  "tests/test_linear.py",
  "tests/test_sharding.py",
  "tests/test_losses.py",
  "tests/test_softmax.py",
  "tests/test_export.py",
  "tests/test_entropy.py",
  "tests/test_sigmoid.py",
  "tests/test_debug_tools.py",
  "tests/test_benchmarks.py",
  "tests/test_notebooks.py",
  "tests/test_derivations_cases.py",
  "tests/test_settings.py",
  "tests/test_derivations_check.py",
  "tests/test_optax_suite.py",
  "tests/test_sizes.py",
  "tests/test_class_weights.py",
  "tests/test_wheel.py",
)


# tryfirst: pytest's mark plugin deselects `-m "not full"` in its own hook of
# this name, so the sweeps' marks must be added before it runs
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  mark_sweeps(items)

  def rank(item) -> int:
    for k, prefix in enumerate(LONG_FIRST):
      if item.nodeid.startswith(prefix):
        return k
    return len(LONG_FIRST)

  items.sort(key=rank)  # stable: the rest keep their order


# ---------------------------------------------------------------------------
# parameter sweeps: a covering subset in `make test`, the rest in the full tier


def covering(sizes: dict[str, int]) -> set[tuple[int, ...]]:
  """A covering subset of the grid of parameter indices: row r takes value
  r mod n of each parameter with n values, so every value of every parameter
  appears, in max(n) rows instead of the product of all n."""
  rows = max(sizes.values(), default=1)
  return {tuple(r % n for n in sizes.values()) for r in range(rows)}


def mark_sweeps(items) -> None:
  """Marks `full` each item of a test marked `sweep` outside its covering subset.

  A sweep is a test parametrised over several independent settings (cases
  times transformations, dtypes times reductions) whose cost is mostly XLA
  compilation, one program per combination. `make test` runs each value of
  each parameter at least once (:func:`covering`); `make test-full`, which CI
  runs too, runs every other combination.
  """
  sweeps: dict[object, list] = {}
  for item in items:
    if item.get_closest_marker("sweep") is not None and hasattr(item, "callspec"):
      sweeps.setdefault(item.function, []).append(item)
  for group in sweeps.values():
    # each parameter's values, numbered in order of first use (by identity:
    # every item of a parametrisation holds the same value object)
    names = sorted({k for item in group for k in item.callspec.params})
    seen: dict[str, dict[int, int]] = {k: {} for k in names}
    at = []
    for item in group:
      ids = {k: id(item.callspec.params.get(k)) for k in names}
      at.append(tuple(seen[k].setdefault(ids[k], len(seen[k])) for k in names))
    kept = covering({k: len(seen[k]) for k in names})
    for item, index in zip(group, at, strict=True):
      if index not in kept:
        item.add_marker(pytest.mark.full)


# ---------------------------------------------------------------------------
# dtypes and float64


FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")
LOW_DTYPES = ("bfloat16", "float16")


@pytest.fixture
def x64():
  """Runs the test with float64 enabled, without leaking it to other tests."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(params=FLOAT_DTYPES)
def dtype(request):
  """Each floating dtype; float64 tests run with x64 enabled."""
  if request.param == "float64":
    with jax.enable_x64(True):
      yield jnp.dtype(jnp.float64)
  else:
    yield jnp.dtype(request.param)


def eps(dtype) -> float:
  return float(jnp.finfo(dtype).eps)


def ulp(ref, dtype) -> np.ndarray:
  """The spacing of `dtype` at each value of the float64 array `ref`."""
  fi = jnp.finfo(dtype)
  mag = np.abs(np.asarray(ref, np.float64))
  with np.errstate(divide="ignore"):
    e = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
  e = np.maximum(e, int(fi.minexp))
  return np.ldexp(1.0, (e - int(fi.nmant)).astype(int))


def f64(x) -> np.ndarray:
  """Any array (bfloat16 included) as a float64 NumPy array."""
  return np.asarray(np.asarray(x).astype(np.float64))


# ---------------------------------------------------------------------------
# transformations


TRANSFORMS = {
  "eager": lambda f: f,
  "jit": jax.jit,
  "vmap": jax.vmap,
}


@pytest.fixture(params=list(TRANSFORMS))
def transform(request):
  """eager, jax.jit or jax.vmap (over the leading axis of every argument).

  Apply it to a function of arrays that works on one slice along its last
  axis; the result, called on a batch, must equal the untransformed function.
  """
  return TRANSFORMS[request.param]


# ---------------------------------------------------------------------------
# float64 NumPy references


def np_log_softmax(x, axis=-1) -> np.ndarray:
  x = f64(x)
  m = np.max(x, axis=axis, keepdims=True)
  return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def np_softmax(x, axis=-1) -> np.ndarray:
  return np.exp(np_log_softmax(x, axis))


# ---------------------------------------------------------------------------
# the bwd-against-autodiff check


def assert_vjp_matches(f, ref, args, *, rtol, atol=0.0, seed=0):
  """Checks that jax.vjp of `f` equals jax.vjp of the autodiff reference `ref`.

  Both get the same random cotangent; every input cotangent is compared.
  Raises AssertionError naming the argument that differs.
  """
  shape = jax.eval_shape(f, *args)
  g = np.random.default_rng(seed).standard_normal(shape.shape).astype(shape.dtype)

  @functools.partial(jax.jit, static_argnums=0)
  def out_and_vjp(fn, *args):
    out, fn_vjp = jax.vjp(fn, *args)
    return out, fn_vjp(g)

  out, got = out_and_vjp(f, *args)
  ref_out, want = out_and_vjp(ref, *args)
  np.testing.assert_allclose(f64(out), f64(ref_out), rtol=rtol, atol=atol)
  for i, (a, b) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_allclose(
      f64(a), f64(b), rtol=rtol, atol=atol, err_msg=f"cotangent of argument {i}"
    )
