"""``python -m stereodistill.cli``: the same as the ``stereodistill`` console script."""

from stereodistill.cli import main

main()
