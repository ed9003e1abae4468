"""``python -m svtprune.cli``: the same as the ``svtprune`` command."""

from svtprune.cli.app import main

main()
