"""The command line, ``python -m jobs``: its parser, its commands, and the demo.

``_main`` parses arguments and dispatches; ``_load`` imports the user's registry and
scheduler; ``_serve`` runs a worker or scheduler until signalled; ``_supervisor`` keeps
``--processes`` children alive; ``_format`` prints jobs and stats; ``_dashboard`` serves
the web dashboard; ``demo`` runs the whole feature set end to end.
"""

from jobs.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
