"""``python -m analysis``: hands over to the command-line layer, :mod:`workflows.analysis_cli`."""

import sys

from workflows.analysis_cli import main

sys.exit(main())
