"""The mutation list stays in step with the code and with the committed table
the report shows: fast, reads files only (the full run is `make mutate`)."""

from __future__ import annotations

import dataclasses
import pathlib

from derivations import mutate

DERIVATIONS = pathlib.Path(mutate.__file__).resolve().parent


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


def test_make_mutate_fails_below_ninety_percent(monkeypatch, tmp_path):
  caught = [mutate.Outcome(m, "caught", ("x",)) for m in mutate.MUTATIONS[:9]]
  survived = mutate.Outcome(mutate.MUTATIONS[9], "survived")
  out = tmp_path / "MUTATIONS.md"
  for outcomes, status in (([*caught, survived], 0), ([*caught[:8], survived], 1)):
    monkeypatch.setattr(mutate, "run_all", lambda chosen, workers, o=outcomes: o)
    assert mutate.main(["--out", str(out)]) == status, mutate.rate(outcomes)
  assert "**survived**" in out.read_text()


def _committed_rows() -> list[str]:
  table = (DERIVATIONS / "MUTATIONS.md").read_text(encoding="utf-8")
  return [line for line in table.splitlines() if line.startswith("| `")]


def test_the_committed_table_lists_every_mutation_in_order():
  # a mutation added, removed, renamed or re-described since the last
  # `make mutate` leaves the table stale: rerun it and commit the table
  rows = _committed_rows()
  assert len(rows) == len(mutate.MUTATIONS), "rerun `make mutate`"
  for row, m in zip(rows, mutate.MUTATIONS, strict=True):
    assert row.startswith(mutate.row_head(m) + " "), (row, "rerun `make mutate`")


def test_the_committed_table_catches_every_mutation():
  # the last column names the first failing check; else survived or stale
  missed = [row for row in _committed_rows() if row.rsplit(" | ", 1)[1][:1] != "`"]
  assert not missed, "every mutation must be caught; add a derivation case:\n" + (
    "\n".join(missed)
  )
  table = (DERIVATIONS / "MUTATIONS.md").read_text(encoding="utf-8")
  n = len(mutate.MUTATIONS)
  assert table.startswith(f"{n} of {n} mutations caught (100%)")


def test_the_report_shows_the_committed_table():
  table = (DERIVATIONS / "MUTATIONS.md").read_text(encoding="utf-8")
  report = (DERIVATIONS / "REPORT.md").read_text(encoding="utf-8")
  assert table in report, "rerun `python -m derivations` after `make mutate`"
