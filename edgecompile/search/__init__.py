"""Searches over precision plans driven by validation's numbers (automatic precision fallback)."""
