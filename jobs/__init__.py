"""jobs: reliable background jobs for Python on Redis."""

from __future__ import annotations

__version__ = "0.1.0"
