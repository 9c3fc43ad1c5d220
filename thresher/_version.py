"""The version of thresher, in a module of its own so that any module can read it.

``thresher/__init__.py`` imports the API on first use; a module that needs
only the version imports it from here and so depends on nothing else.
"""

from __future__ import annotations

__version__ = "0.1.0"
