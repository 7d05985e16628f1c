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


def test_keys_run_only_those_and_keep_the_other_rows(monkeypatch, tmp_path):
  m0, m1, m2, m3 = mutate.MUTATIONS[:4]
  out = tmp_path / "MUTATIONS.md"
  before = [mutate.Outcome(m, "caught", ("x",)) for m in (m0, m1, m2)]
  out.write_text(mutate.markdown(before))
  changed = dataclasses.replace(m1, what="a bug described anew")
  monkeypatch.setattr(mutate, "MUTATIONS", (m0, changed, m2, m3))
  ran = []

  def run_all(chosen, workers):
    ran.extend(m.key for m in chosen)
    return [mutate.Outcome(m, "caught", ("y",)) for m in chosen]

  monkeypatch.setattr(mutate, "run_all", run_all)
  assert mutate.main(["--keys", m1.key, "--out", str(out)]) == 1  # m3 has no row
  assert ran == [m1.key]
  assert mutate.main(["--keys", m3.key, "--out", str(out)]) == 0
  rows = [line for line in out.read_text().splitlines() if line.startswith("| `")]
  assert [r.split("`")[1] for r in rows] == [m0.key, m1.key, m2.key, m3.key]
  assert "a bug described anew | `y`" in rows[1] and rows[0].endswith("`x` |")
  assert out.read_text().startswith("4 of 4 mutations caught (100%)")


COMMITTED = DERIVATIONS / "MUTATIONS.md"


def test_the_committed_table_lists_every_mutation_in_order():
  # a mutation added or re-described since its last run has no row: run it
  table = COMMITTED.read_text(encoding="utf-8")
  merged, missing = mutate.merge(table, [])
  assert not missing, (
    f"run `python -m derivations.mutate --keys {' '.join(missing)}"
    " --out derivations/MUTATIONS.md`, then `python -m derivations`"
  )
  assert merged == table, "rows of removed mutations or out of order: `make mutate`"


def test_the_committed_table_catches_every_mutation():
  table = COMMITTED.read_text(encoding="utf-8")
  rows = [line for line in table.splitlines() if line.startswith("| `")]
  missed = [r for r in rows if not r.rsplit(" | ", 1)[1].startswith("`")]
  assert not missed, "every mutation must be caught: add a derivation case\n" + (
    "\n".join(missed)
  )
  assert mutate.table_rate(table) == 1.0


def test_the_report_shows_the_committed_table():
  table = COMMITTED.read_text(encoding="utf-8")
  report = (DERIVATIONS / "REPORT.md").read_text(encoding="utf-8")
  assert table in report, "rerun `python -m derivations` after `make mutate`"
