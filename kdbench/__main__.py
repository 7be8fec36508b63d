"""``python -m kdbench``: the same as the ``kdbench`` console script."""

from .cli import main

main()
