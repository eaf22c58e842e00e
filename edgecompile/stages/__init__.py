"""The pipeline's stages, in order: export -> annotate -> calibrate -> build -> validate."""

STAGE_ORDER = ("export", "annotate", "calibrate", "build", "validate")
