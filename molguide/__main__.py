"""``python -m molguide``: the command line (:mod:`molguide.cli`)."""

import sys

from molguide.cli import main

sys.exit(main())
