"""Activation ranges: measured once, streamed sample by sample, saved for every backend to reuse."""
