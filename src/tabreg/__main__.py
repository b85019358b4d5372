"""``python -m tabreg``: the command line (:mod:`tabreg.cli`)."""

from tabreg.cli import main

main()
