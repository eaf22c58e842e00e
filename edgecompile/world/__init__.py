"""The bundled offline image-text world: seeded scenes of coloured shapes.

Why it exists: no data sets can be downloaded on build machines, yet accuracy gates need
a task with ground truth. This world supplies images, class labels, captions and QA pairs.
"""

from edgecompile.world.generator import SPLITS, Scene, generate, split_of_hash
from edgecompile.world.variants import VARIANTS, apply_variant
from edgecompile.world.vocabulary import CLASS_NAMES, COLOURS, POSITIONS, SHAPES, class_prompt

__all__ = [
    "CLASS_NAMES", "COLOURS", "POSITIONS", "SHAPES", "SPLITS", "VARIANTS",
    "Scene", "apply_variant", "class_prompt", "generate", "split_of_hash",
]
