"""The built wheel, installed in a fresh virtualenv outside the repo.

The wheel is built from this checkout, installed with ``--no-deps`` into a
new venv whose only way to the dependencies (jax, sympy, numpy) is a ``.pth``
line to this environment's site-packages, placed after the venv's own. Every
command runs in a temporary directory, so nothing of the checkout is
importable there: what runs is what the wheel installed.
"""

import pathlib
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

REPO = pathlib.Path(__file__).parents[1]

pytestmark = pytest.mark.slow


def _run(cmd, cwd, **kw):
  return subprocess.run(
    [str(c) for c in cmd],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
    **kw,
  )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("dist")
  r = _run(
    [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out],
    cwd=REPO,
  )
  assert r.returncode == 0, r.stdout + r.stderr
  (whl,) = out.glob("jaxsmx-*.whl")
  return whl


@pytest.fixture(scope="module")
def env(wheel, tmp_path_factory) -> dict[str, pathlib.Path]:
  root = tmp_path_factory.mktemp("venv")
  venv.create(root, with_pip=False)
  py = root / "bin" / "python"
  site = pathlib.Path(
    _run(
      [py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root
    ).stdout.strip()
  )
  # the dependencies, from this environment, after the venv's own packages
  (site / "zz_jaxsmx_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
  r = _run(
    [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", wheel],
    cwd=root,
  )
  assert r.returncode == 0, r.stdout + r.stderr
  return {"python": py, "site": site, "bin": root / "bin", "root": root}


def test_wheel_holds_only_jaxsmx_names_and_the_licence(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert tops == {"jaxsmx", "jaxsmx_derivations", "jaxsmx-0.1.0.dist-info"}, tops
  assert "jaxsmx-0.1.0.dist-info/licenses/LICENSE" in names
  meta = zipfile.ZipFile(wheel).read("jaxsmx-0.1.0.dist-info/METADATA").decode()
  assert "Classifier: License :: OSI Approved :: Apache Software License" in meta
  assert "Classifier: Programming Language :: Python :: 3.11" in meta
  assert "Classifier: Operating System :: OS Independent" in meta
  entry = zipfile.ZipFile(wheel).read("jaxsmx-0.1.0.dist-info/entry_points.txt")
  assert b"jaxsmx-derive = jaxsmx_derivations.__main__:main" in entry


def test_installed_import_loads_neither_sympy_nor_derivations(env, tmp_path):
  code = (
    "import sys, jaxsmx; print(jaxsmx.__file__); "
    "print(sorted(m for m in sys.modules if 'sympy' in m or 'derivations' in m))"
  )
  r = _run([env["python"], "-c", code], cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  where, loaded = r.stdout.splitlines()
  assert pathlib.Path(where).is_relative_to(env["site"]), where
  assert loaded == "[]", loaded


def _files(root: pathlib.Path) -> dict[str, bytes]:
  return {
    str(f.relative_to(root)): f.read_bytes()
    for f in sorted(root.rglob("*"))
    if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
  }


def test_wheel_carries_the_checkouts_code_byte_for_byte(wheel):
  """Every file of jaxsmx/ and derivations/ is in the wheel, unchanged (the
  derivations under the name jaxsmx_derivations), and nothing else is. With
  the checkout's own test that the committed report is current
  (tests/test_derivations.py), this is what makes an installed jaxsmx-derive
  write the committed report; CI's full tier runs that whole command too
  (test_installed_jaxsmx_derive_reproduces_the_committed_report)."""
  with zipfile.ZipFile(wheel) as z:
    packed = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
  for folder, name in (("jaxsmx", "jaxsmx"), ("derivations", "jaxsmx_derivations")):
    here = _files(REPO / folder)
    there = {
      n.removeprefix(f"{name}/"): b
      for n, b in packed.items()
      if n.startswith(f"{name}/")
    }
    assert sorted(there) == sorted(here), folder
    assert all(there[n] == here[n] for n in here), folder


def test_installed_jaxsmx_derive_writes_to_the_current_directory(env, tmp_path):
  """The installed CLI, run from an empty directory, writes ./REPORT.md with
  one progress line per derivation and writes nothing into site-packages.
  One derivation stands in for the full list here (the full run is the CI
  tier's test below). First, every module of the wheel imports installed: none
  reaches for the checkout (an absolute ``derivations.`` import, a file left
  out)."""
  before = {p: p.stat().st_mtime_ns for p in env["site"].rglob("*") if p.is_file()}
  code = """if True:
    import importlib, pkgutil, sys
    import jaxsmx, jaxsmx_derivations
    for package in (jaxsmx, jaxsmx_derivations):
      prefix = package.__name__ + "."
      for module in pkgutil.walk_packages(package.__path__, prefix):
        importlib.import_module(module.name)
    from jaxsmx_derivations import __main__ as cli, all_derivations
    one = [d for d in all_derivations() if d.key == "softmax"]
    sys.exit(cli.main([], derivations=one, checks=[]))
  """
  r = _run([env["python"], "-c", code], cwd=tmp_path)
  assert r.returncode == 0, r.stdout + r.stderr
  report = tmp_path / "REPORT.md"
  text = report.read_text(encoding="utf-8")
  assert text.startswith("# jaxsmx derivation report") and "all checks pass" in text
  assert "ok   softmax " in r.stdout
  assert f"wrote {report} (total " in r.stdout
  # nothing was written into the installed package
  after = {p: p.stat().st_mtime_ns for p in env["site"].rglob("*") if p.is_file()}
  changed = {
    p for p in after if before.get(p) != after[p] and "__pycache__" not in p.parts
  }
  assert not changed, changed


@pytest.mark.full
def test_installed_jaxsmx_derive_reproduces_the_committed_report(env, tmp_path):
  """CI's full tier (make test-full): the console script, every derivation
  and numeric check, from the installed wheel, byte for byte the committed
  report (about a minute on 2 cores)."""
  r = _run([env["bin"] / "jaxsmx-derive"], cwd=tmp_path)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "ok   softmax " in r.stdout and "ok   linear_softmax_cross_entropy" in r.stdout
  committed = (REPO / "derivations" / "REPORT.md").read_text(encoding="utf-8")
  assert (tmp_path / "REPORT.md").read_text(encoding="utf-8") == committed


def test_installed_check_without_a_report_explains_itself(env, tmp_path):
  r = _run([env["bin"] / "jaxsmx-derive", "--check"], cwd=tmp_path)
  assert r.returncode == 3
  assert r.stdout == ""
  (line,) = r.stderr.splitlines()
  assert "no checkout here to compare with" in line and "--out PATH" in line


def test_installed_unwritable_out_is_one_line(env, tmp_path):
  blocker = tmp_path / "a-file"
  blocker.write_text("")
  r = _run([env["bin"] / "jaxsmx-derive", "--out", blocker / "REPORT.md"], cwd=tmp_path)
  assert r.returncode == 3
  assert "Traceback" not in r.stderr
  (line,) = r.stderr.splitlines()
  assert line.startswith("jaxsmx-derive: cannot write ") and "--out PATH" in line


def test_python_dash_m_runs_the_same_cli(env, tmp_path):
  r = _run([env["python"], "-m", "jaxsmx_derivations", "--help"], cwd=tmp_path)
  assert r.returncode == 0 and "./REPORT.md from an installed package" in r.stdout


def test_editable_install_runs_the_checkout(tmp_path):
  """In the development install (`pip install -e .`), jaxsmx_derivations is
  the checkout's derivations/ folder, live, and jaxsmx-derive writes there."""
  code = (
    "import jaxsmx_derivations as d, jaxsmx_derivations.__main__ as m; "
    "print(d.__path__[0]); print(m.default_out('markdown'))"
  )
  r = _run([sys.executable, "-c", code], cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  path, out = r.stdout.splitlines()
  assert pathlib.Path(path) == REPO / "derivations"
  assert pathlib.Path(out) == REPO / "derivations" / "REPORT.md"
  script = pathlib.Path(sys.executable).parent / "jaxsmx-derive"
  r = _run([script, "--help"], cwd=tmp_path)
  assert r.returncode == 0 and r.stdout.startswith("usage: jaxsmx-derive"), r.stderr
