"""Weight transforms: rewrite float weights before calibration (GPTQ rounding; SmoothQuant, AWQ and VLMQ plug in here)."""
