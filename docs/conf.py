"""Sphinx configuration of the jobs documentation (``tox -e docs`` builds it offline)."""

from __future__ import annotations

import jobs

project = "jobs"
author = "the jobs authors"
copyright = "the jobs authors"  # noqa: A001 (Sphinx's name for it)
release = jobs.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]

# The docstrings write `Name` for a name of the package: link it where Sphinx can.
default_role = "py:obj"
# The API reference names things as they are imported (``jobs.Client``), never by the
# module that happens to define them: the modules move, the public names do not.
add_module_names = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {
    "description": "Reliable background jobs for Python on Redis",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
# Nothing is fetched while building: no intersphinx, no remote images.
pygments_style = "sphinx"
