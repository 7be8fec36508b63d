"""kdbench's version, in a leaf module so that any module can read it without importing the
package's top level."""

from __future__ import annotations

__version__ = "0.2.0"
