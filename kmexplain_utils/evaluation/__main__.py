"""``python -m kmexplain_utils.evaluation ...``: the command line of :mod:`kmexplain_utils.evaluation.run`."""

from .run import main

raise SystemExit(main())
