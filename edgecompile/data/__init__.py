"""Calibration and eval data: named calibration sets, eval sets and metric functions.

Why a separate package: calibration and validation stages consume `Sample`s and never need
to know whether they came from the bundled world or a user's folder of images.
"""

from edgecompile.data.errors import DataError
from edgecompile.data.samples import Sample

__all__ = ["DataError", "Sample"]
