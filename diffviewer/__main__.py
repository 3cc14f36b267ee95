"""``python -m diffviewer``: the same entry point as the ``diffviewer`` command."""

import sys

from diffviewer.cli import main

sys.exit(main())
