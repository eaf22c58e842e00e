"""The pipeline's stages, in order: export -> annotate -> transform -> calibrate -> build -> validate."""

STAGE_ORDER = ("export", "annotate", "transform", "calibrate", "build", "validate")
