"""The ten ImageNet-C corruptions used by EdgeVLM-Bench (seed 002), in numpy and PIL only.

Parameters follow Hendrycks & Dietterich (ICLR 2019), scaled from their 224-pixel setting where a
parameter is in pixels. Every corruption is deterministic: its random state is seeded from
(seed, corruption, severity).

Why not the ``imagecorruptions`` package (checked with imagecorruptions 1.1.2, numpy 2.4.6,
scikit-image 0.26, opencv-python 5.0): it pulls OpenCV and scikit-image, which this project does
not depend on, and with current numpy/scikit-image three of its corruptions do not run: ``fog``
(one of our ten: ``np.float_`` was removed in NumPy 2.0), ``glass_blur`` and ``gaussian_blur``
(scikit-image dropped ``multichannel``). So the functions are written here, and the numbers they
give are robustness on this project's eval images, not ImageNet-C numbers (see ``COMPARABILITY``).
Checked against imagecorruptions on a 224-pixel image (mean absolute pixel change, severities
1/3/5): brightness, contrast, JPEG and pixelate agree within 1%; the three noises have the same
strength (other random draws); defocus and motion blur are somewhat weaker here (defocus s1 1.0
vs 1.6, motion s5 7.6 vs 10.5 grey levels); fog could not be compared (it fails there).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "fog", "brightness", "contrast", "jpeg_compression", "pixelate")
SEVERITIES = (1, 2, 3, 4, 5)
COMPARABILITY = (
    "Corruptions: this project's numpy/PIL implementation of ten ImageNet-C corruptions (Hendrycks & Dietterich 2019), "
    "parameters scaled from 224 pixels, applied to this build's eval set. RS and mCE are comparable between builds "
    "and against the float reference here; they are not ImageNet-C-comparable numbers (different images, no AlexNet "
    "normalisation of mCE, our own implementation rather than the imagecorruptions package)."
)


def _f(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def _img(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel 2-D convolution with reflect padding, via FFT."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(x, ((ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)), mode="reflect")
    h, w = padded.shape[:2]
    kf = np.fft.rfft2(kernel[::-1, ::-1], s=(h, w))
    out = np.fft.irfft2(np.fft.rfft2(padded, axes=(0, 1)) * kf[..., None], s=(h, w), axes=(0, 1))
    return out[kh - 1 :, kw - 1 :][: x.shape[0], : x.shape[1]]


def _scale(img: Image.Image) -> float:
    return min(img.size) / 224.0


def gaussian_noise(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = _f(img)
    return _img(x + rng.normal(size=x.shape, scale=c))


def shot_noise(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (60, 25, 12, 5, 3)[severity - 1]
    return _img(rng.poisson(_f(img) * c) / c)


def impulse_noise(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    x = _f(img).copy()
    hit = rng.random(x.shape) < c
    x[hit] = (rng.random(int(hit.sum())) < 0.5).astype(np.float64)
    return _img(x)


def _disk(radius: float, sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    k /= k.sum()
    if sigma > 0:  # ImageNet-C anti-aliases the disk with a Gaussian
        g = np.exp(-(np.arange(-3, 4) ** 2) / (2 * sigma**2))
        g2 = np.outer(g, g) / np.outer(g, g).sum()
        k = _convolve(np.pad(k, 3)[..., None], g2)[..., 0]
        k /= k.sum()
    return k


def defocus_blur(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    radius, sigma = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    return _img(_convolve(_f(img), _disk(max(1.0, radius * _scale(img)), sigma)))


def motion_blur(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    s = _scale(img)
    radius, sigma = max(2.0, radius * s), max(0.5, sigma * s)
    angle = np.deg2rad(rng.uniform(-45, 45))
    length = int(np.ceil(radius))
    k = np.zeros((2 * length + 1, 2 * length + 1))
    for t in range(length + 1):  # a one-sided streak with Gaussian fall-off, like Wand's motion_blur
        y, x = length + int(round(-t * np.sin(angle))), length + int(round(t * np.cos(angle)))
        k[y, x] += np.exp(-(t**2) / (2 * sigma**2))
    return _img(_convolve(_f(img), k / k.sum()))


def _plasma(size: int, wibble: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square fractal in [0, 1] (ImageNet-C's fog)."""
    n = 1
    while n < size:
        n *= 2
    grid = np.zeros((n, n))
    step, scale = n, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:n:step, 0:n:step]
        sq = (corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(np.roll(corners, -1, 0), -1, 1)) / 4
        grid[half:n:step, half:n:step] = sq + scale * rng.uniform(-1, 1, sq.shape)
        d = grid[half:n:step, half:n:step]
        ltsum = grid[0:n:step, 0:n:step] + np.roll(grid[0:n:step, 0:n:step], -1, 1)
        grid[0:n:step, half:n:step] = (ltsum + d + np.roll(d, 1, 0)) / 4 + scale * rng.uniform(-1, 1, d.shape)
        ttsum = grid[0:n:step, 0:n:step] + np.roll(grid[0:n:step, 0:n:step], -1, 0)
        grid[half:n:step, 0:n:step] = (ttsum + d + np.roll(d, 1, 1)) / 4 + scale * rng.uniform(-1, 1, d.shape)
        step, scale = half, scale / wibble
    grid -= grid.min()
    return grid / max(grid.max(), 1e-12)


def fog(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    strength, wibble = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[severity - 1]
    x = _f(img)
    peak = x.max()
    h, w = x.shape[:2]
    x = x + strength * _plasma(max(h, w), wibble, rng)[:h, :w, None]
    return _img(x * peak / (peak + strength))


def brightness(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    hsv = np.asarray(img.convert("RGB").convert("HSV"), dtype=np.float64)
    hsv[..., 2] = np.clip(hsv[..., 2] + c * 255.0, 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def contrast(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = _f(img)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _img((x - mean) * c + mean)


def jpeg_compression(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def pixelate(img: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    w, h = img.size
    small = img.convert("RGB").resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BOX)


FUNCTIONS: dict[str, Callable[[Image.Image, int, np.random.Generator], Image.Image]] = {name: globals()[name] for name in CORRUPTIONS}


def corrupt(img: Image.Image, name: str, severity: int, seed: int = 0) -> Image.Image:
    """Apply corruption ``name`` at ``severity`` (1-5); the same arguments give the same pixels."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption '{name}'; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return FUNCTIONS[name](img, severity, rng)
