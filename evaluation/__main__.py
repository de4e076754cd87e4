"""``python -m evaluation``: the evaluation grid's command line (:func:`evaluation.grid.main`)."""

from .grid import main

main()
