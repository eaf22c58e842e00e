"""Pixel rendering of scenes: textured muted backgrounds and coloured shapes.

numpy + PIL only, no randomness of its own: every random choice arrives in the
`SceneSpec`, so the same spec renders the same bytes on every machine.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from edgecompile.world.spec import BackgroundSpec, SceneSpec, ShapeSpec

_SUPERSAMPLE = 2  # draw shapes at 2x and downsample, for smooth edges
# Shapes get a dark contour: a colour-independent edge that lets a small ViT's linear
# patch embedding see a shape's outline whatever its colour (like icon-style datasets).
_OUTLINE_RGB = (24, 24, 24)
_OUTLINE_WIDTH = 3  # in supersampled pixels, i.e. 1.5 output pixels


def hue_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """Convert HSV (hue in degrees) to an 8-bit RGB triple."""
    r, g, b = colorsys.hsv_to_rgb((hue % 360.0) / 360.0, saturation, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def render_background(bg: BackgroundSpec, size: int) -> np.ndarray:
    """Render a muted textured background as float32 HxWx3 in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if bg.kind == "gradient":
        angle = math.radians(bg.angle)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif bg.kind == "stripes":
        angle = math.radians(bg.angle)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * bg.frequency * t)
    elif bg.kind == "checker":
        cells = max(int(bg.frequency), 2)
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    elif bg.kind == "noise":
        rng = np.random.default_rng(bg.noise_seed)
        coarse = rng.random((8, 8)).astype(np.float32)
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        t = np.asarray(img, dtype=np.float32) / 255.0
    else:  # pragma: no cover - BackgroundSpec validates kind
        raise ValueError(f"unknown background kind {bg.kind!r}")
    c1 = np.array(hue_to_rgb(bg.hue, bg.saturation, bg.value_low), dtype=np.float32)
    c2 = np.array(hue_to_rgb(bg.hue + 30.0, bg.saturation, bg.value_high), dtype=np.float32)
    out = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    grain = np.random.default_rng(bg.noise_seed + 1).normal(0.0, bg.grain, (size, size, 1))
    return np.clip(out + grain.astype(np.float32), 0, 255)


def shape_polygon(shape: ShapeSpec, scale: float) -> list[tuple[float, float]] | None:
    """Return the polygon of a shape in pixel coordinates (None for a circle)."""
    cx, cy, r = shape.cx * scale, shape.cy * scale, shape.radius * scale
    rot = math.radians(shape.rotation)
    if shape.shape == "circle":
        return None
    if shape.shape == "square":
        n, radii = 4, [r * 0.95] * 4
        offset = math.pi / 4
    elif shape.shape == "triangle":
        n, radii = 3, [r * 1.1] * 3
        offset = -math.pi / 2
    elif shape.shape == "star":
        n, radii = 10, [r * 1.1 if i % 2 == 0 else r * 0.45 for i in range(10)]
        offset = -math.pi / 2
    else:  # pragma: no cover - ShapeSpec validates shape
        raise ValueError(f"unknown shape {shape.shape!r}")
    return [
        (cx + radii[i] * math.cos(offset + rot + 2 * math.pi * i / n),
         cy + radii[i] * math.sin(offset + rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


def render_scene(spec: SceneSpec) -> Image.Image:
    """Render a scene spec to an RGB PIL image of spec.size x spec.size."""
    size = spec.size
    base = render_background(spec.background, size)
    big = size * _SUPERSAMPLE
    mask_img = Image.new("L", (big, big), 0)
    colour_img = Image.new("RGB", (big, big), (0, 0, 0))
    draw_mask = ImageDraw.Draw(mask_img)
    draw_colour = ImageDraw.Draw(colour_img)
    for shape in spec.shapes:
        rgb = hue_to_rgb(shape.hue, shape.saturation, shape.value)
        poly = shape_polygon(shape, _SUPERSAMPLE)
        if poly is None:
            cx, cy, r = (v * _SUPERSAMPLE for v in (shape.cx, shape.cy, shape.radius))
            box = (cx - r, cy - r, cx + r, cy + r)
            draw_mask.ellipse(box, fill=255, outline=255, width=_OUTLINE_WIDTH)
            draw_colour.ellipse(box, fill=rgb, outline=_OUTLINE_RGB, width=_OUTLINE_WIDTH)
        else:
            draw_mask.polygon(poly, fill=255, outline=255, width=_OUTLINE_WIDTH)
            draw_colour.polygon(poly, fill=rgb, outline=_OUTLINE_RGB, width=_OUTLINE_WIDTH)
    mask = np.asarray(mask_img.resize((size, size), Image.BOX), dtype=np.float32)[..., None] / 255.0
    colour = np.asarray(colour_img.resize((size, size), Image.BOX), dtype=np.float32)
    # Colour was drawn on black, so divide by coverage to undo the edge darkening.
    colour = colour / np.maximum(mask, 1e-3)
    out = base * (1 - mask) + np.clip(colour, 0, 255) * mask
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")
