"""The ``svtprune`` command line: a thin typer layer over ``svtprune.jobs`` (see ``app.py``)."""

from svtprune.cli.app import app, main

__all__ = ["app", "main"]
