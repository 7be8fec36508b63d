"""kdbench's version, in a leaf module so that any module can read it without importing the
package's top level. The one source of the version: ``pyproject.toml`` reads it from here
(``[tool.setuptools.dynamic]``)."""

from __future__ import annotations

__version__ = "0.3.0.dev0"
