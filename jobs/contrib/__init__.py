"""Integrations with frameworks; each module needs its framework (``pip install 'jobs[flask]'``)."""
