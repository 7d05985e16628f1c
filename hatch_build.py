"""Build hook: the repo folder ``derivations/`` installs as ``jaxsmx_derivations``.

A wheel gets a copy (``force-include`` in pyproject.toml). An editable install
(``pip install -e .``) gets instead a one-file package whose ``__path__`` is
the checkout's ``derivations/``, so that edits there take effect at once, as
they do for ``jaxsmx/``.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_SHIM = '''\
"""jaxsmx_derivations in an editable install: the checkout's derivations/."""

__path__ = [{path!r}]
__file__ = {init!r}
with open(__file__, encoding="utf-8") as _f:
  exec(compile(_f.read(), __file__, "exec"))
del _f
'''


class EditableDerivations(BuildHookInterface):
  PLUGIN_NAME = "custom"

  def initialize(self, version: str, build_data: dict) -> None:
    if self.target_name != "wheel" or version != "editable":
      return
    src = pathlib.Path(self.root, "derivations").resolve()
    self._tmp = tempfile.mkdtemp(prefix="jaxsmx-build-")
    shim = pathlib.Path(self._tmp, "__init__.py")
    shim.write_text(
      _SHIM.format(path=str(src), init=str(src / "__init__.py")), encoding="utf-8"
    )
    build_data["force_include_editable"] = {str(shim): "jaxsmx_derivations/__init__.py"}

  def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
    tmp = getattr(self, "_tmp", None)
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
