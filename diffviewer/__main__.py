"""``python -m diffviewer``: the same entry point as the ``diffviewer`` command."""

import sys

from diffviewer.launcher import main

# Guarded: dask's worker processes start by importing the main module of the parent.
if __name__ == "__main__":
    sys.exit(main())
