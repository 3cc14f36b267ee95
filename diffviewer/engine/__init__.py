"""The subtraction engine: pure functions from exposures to results; no Qt, no threads."""
