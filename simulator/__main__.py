"""``python -m simulator``: hands over to the command-line layer, :mod:`workflows.run`."""

import sys

from workflows.run import main

sys.exit(main())
