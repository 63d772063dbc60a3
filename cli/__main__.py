"""``python -m pool.cli``: the same as ``python -m pool``."""

from .main import main

main()
