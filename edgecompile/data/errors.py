"""The one error type for bad data input (a user error, printed without a traceback)."""


class DataError(ValueError):
    """Bad calibration/eval data input; the message names the file, field and expectation."""
