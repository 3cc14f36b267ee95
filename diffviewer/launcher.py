"""The ``diffviewer`` command's entry point, light enough that Ctrl-C at start-up is one line.

The command-line module imports numpy, astropy and the engine; a Ctrl-C while they
load would print a traceback. This module imports nothing heavy before it can catch it.
"""

import sys


def main() -> int:
    """Run :func:`diffviewer.cli.main`; a Ctrl-C while it loads prints one line.

    Returns
    -------
    int
        The process exit code (130 when interrupted during start-up).
    """
    try:
        from diffviewer.cli import end_process
        from diffviewer.cli import main as cli_main
    except KeyboardInterrupt:
        print("error: interrupted during start-up; nothing was done", file=sys.stderr)
        return 130
    return end_process(cli_main())
