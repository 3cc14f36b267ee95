"""The error hierarchy of diffviewer.

Every message names the file or value at fault and says what to do about it,
so that the command line can print it on one line and the GUI can show it as is.
"""


class DiffviewerError(Exception):
    """Base class of every error diffviewer raises on purpose."""


class InputError(DiffviewerError):
    """An input file, extension, array or value cannot be used."""


class RegistrationError(InputError):
    """The template cannot be registered to the science image (no transform found).

    Parameters
    ----------
    message : str
        What failed, with the star counts and what to try.
    n_science_stars, n_template_stars : int
        Stars found on each image.
    """

    def __init__(self, message: str, n_science_stars: int, n_template_stars: int) -> None:
        super().__init__(message)
        self.n_science_stars = n_science_stars
        self.n_template_stars = n_template_stars


class ConfigError(DiffviewerError):
    """A configuration value is out of range, of the wrong type or inconsistent."""


class NoWorkFound(DiffviewerError):
    """There is nothing to subtract, e.g. the template covers too little of the science image."""


class InsufficientKernelSources(DiffviewerError):
    """No PSF-matching kernel can be made: no pixel is usable on both images.

    With few or no kernel stars the engine falls back to a kernel from the two PSFs
    (given, or measured from the brightest compact sources or a header FWHM), then to
    a delta kernel with a warning; this error is what remains when even that fails.
    """


class OutputError(DiffviewerError):
    """An output cannot be written where it was asked for."""


class ClusterLost(DiffviewerError):
    """The dask scheduler (or the connection to it) was lost while a batch ran."""


class Cancelled(DiffviewerError):
    """The run was cancelled through its cancel token."""
