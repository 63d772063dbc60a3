"""``python -m pool``: the command line, as the ``pool`` script runs it."""

from pool.cli.main import main

main()
