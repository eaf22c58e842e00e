"""The closed vocabulary of the shapes world: colours, shapes, positions, counts.

Kept in one module so the generator, the tokenizers of the bundled models and the eval
sets agree on the exact words; a word added here reaches all of them.
"""

from __future__ import annotations

# Colour name -> (hue in degrees, allowed hue jitter). Hues are far apart so a colour stays
# identifiable after jitter and on a muted background.
COLOURS: dict[str, tuple[float, float]] = {
    "red": (0.0, 8.0),
    "yellow": (55.0, 6.0),
    "green": (125.0, 12.0),
    "blue": (220.0, 12.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
POSITIONS: tuple[str, ...] = ("left", "center", "right")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three")
BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "gradient", "checker")

# Zero-shot classes are every colour-shape pair, in a fixed order.
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)

PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

QUESTIONS: dict[str, str] = {
    "colour": "what colour is the shape?",
    "shape": "what shape is it?",
    "position": "where is the shape?",
    "count": "how many shapes are there?",
}


def class_prompt(class_name: str) -> str:
    """Return the zero-shot prompt for a class name, e.g. 'a photo of a red triangle'."""
    return f"a photo of a {class_name}"
