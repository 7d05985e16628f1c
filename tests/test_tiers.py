"""The split of the suite into make test and make test-full (tests/conftest.py).

A parameter sweep marked ``sweep`` runs a covering subset of its combinations
in ``make test`` and the rest, marked ``full``, in ``make test-full``.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import covering, mark_sweeps


@pytest.mark.parametrize(
  "sizes",
  [{"a": 1}, {"a": 4, "b": 3}, {"case": 54, "mode": 4}, {"x": 2, "y": 3, "z": 3}],
  ids=str,
)
def test_covering_has_every_value_of_every_parameter(sizes):
  rows = covering(sizes)
  assert len(rows) == max(sizes.values())
  for k, n in enumerate(sizes.values()):
    assert {row[k] for row in rows} == set(range(n))


@dataclasses.dataclass
class _CallSpec:
  params: dict


class _Item:
  """What mark_sweeps reads of a pytest item."""

  def __init__(self, function, params, sweep=True):
    self.function = function
    self.callspec = _CallSpec(params)
    self.marks = ["sweep"] if sweep else []

  def get_closest_marker(self, name):
    return name if name in self.marks else None

  def add_marker(self, mark):
    self.marks.append(mark.name)


def test_sweeps_keep_a_covering_subset_and_mark_the_rest_full():
  def swept(): ...

  def other(): ...

  dtypes, modes = ["f32", "bf16", "f16"], ["jit", "eager"]
  grid = [_Item(swept, {"dtype": d, "mode": m}) for d in dtypes for m in modes]
  plain = [_Item(other, {"dtype": d, "mode": "jit"}, sweep=False) for d in dtypes]
  mark_sweeps(grid + plain)
  kept = [item.callspec.params for item in grid if "full" not in item.marks]
  assert len(kept) == 3
  assert {p["dtype"] for p in kept} == set(dtypes)
  assert {p["mode"] for p in kept} == set(modes)
  assert all("full" not in item.marks for item in plain)
