"""Robustness under common corruptions (seed 002: ImageNet-C's ten corruptions, severities 1-5)."""
