"""diffviewer: inspect and tune astronomical image subtraction.

The engine (:mod:`diffviewer.engine`) rebuilds the LSST ``ImageDifferenceTask``
(warp, PSF-match, subtract, score, detect, measure) as pure functions; the GUI
(:mod:`diffviewer.gui`) shows every step of it.
"""

__version__ = "0.1.0"
