"""``python -m tutor.cli``: the ``tutor`` command line."""

from . import main

main()
