"""Validation: compare the artifact with the float reference, measure it, and judge it by gates."""
