"""The mutation list stays in step with the code: fast, reads files only."""

from __future__ import annotations

import dataclasses

from derivations import mutate


def test_every_mutation_applies_exactly_once():
  problems = mutate.stale()
  assert not problems, "\n".join(f"{m.key}: {why}" for m, why in problems)


def test_every_mutated_file_maps_to_functions():
  for m in mutate.MUTATIONS:
    assert mutate.functions_of(m), m.key


def test_a_stale_mutation_is_caught():
  m = mutate.MUTATIONS[0]
  gone = dataclasses.replace(m, key="gone", old="this text is in no file")
  twice = dataclasses.replace(m, key="twice", old="\n")  # in every line
  missing = dataclasses.replace(m, key="missing", file="_nowhere.py")
  found = dict(mutate.stale((m, gone, twice, missing)))
  assert set(found) == {gone, twice, missing}
  assert "no longer occurs" in found[gone]
  assert "times in" in found[twice]
  assert "does not exist" in found[missing]


def test_a_stale_mutation_fails_the_run_and_the_rate(capsys):
  m = mutate.MUTATIONS[0]
  gone = dataclasses.replace(m, key="gone", old="this text is in no file")
  outcome = mutate.run_one(gone)  # stale: no subprocess is started
  assert outcome.status == "stale"
  caught = mutate.Outcome(m, "caught", ("x",))
  assert mutate.rate([caught, outcome]) == 0.5  # stale counts as not caught
  table = mutate.markdown([caught, outcome])
  assert "1 stale" in table and "FAIL: stale" in table


def test_make_mutate_exits_non_zero_on_a_stale_mutation(monkeypatch, tmp_path, capsys):
  m = mutate.MUTATIONS[0]
  gone = dataclasses.replace(m, key="gone", old="this text is in no file")
  monkeypatch.setattr(mutate, "MUTATIONS", (gone,))
  out = tmp_path / "MUTATIONS.md"
  assert mutate.main(["--out", str(out)]) == 1
  assert "FAIL: stale" in out.read_text()
  assert "FAIL stale mutation gone" in capsys.readouterr().err
