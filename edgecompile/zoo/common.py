"""Helpers shared by the training scripts: threads, seeding, timing, schedules."""

from __future__ import annotations

import math
import random
import sys
import time

import numpy as np
import torch


def setup(seed: int, threads: int) -> None:
    """Seed every RNG and cap CPU threads (the build machines are shared)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def report_validation(progress: Progress, step: int, accuracy: float, target: float, max_minutes: float) -> bool:
    """Log one validation check; True when training should stop (target reached or time cap)."""
    print(f"[{progress.elapsed():7.1f}s] step {step} validation accuracy {accuracy:.3f}", file=sys.stderr, flush=True)
    return accuracy >= target or progress.elapsed() > max_minutes * 60


def save_checkpoint(model: torch.nn.Module, processor, out) -> torch.nn.Module:  # noqa: ANN001 - HF processor, Path
    """save_pretrained the model (safetensors) and processor, plus the classic preprocessor_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # for tools that read only that file
    return model


def cosine_lr(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup then cosine decay to 5% of peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class Progress:
    """Prints a progress line every `every` seconds to stderr."""

    def __init__(self, every: float = 20.0) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.last = self.start
        self.every = every

    def elapsed(self) -> float:
        """Seconds since construction."""
        return time.perf_counter() - self.start

    def cpu_seconds(self) -> float:
        """CPU seconds this process used since construction (all threads)."""
        return time.process_time() - self.cpu_start

    def maybe(self, message: str) -> None:
        """Print `message` if `every` seconds passed since the last print."""
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            print(f"[{now - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)
