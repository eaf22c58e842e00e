"""edgecompile: compile vision-language models for edge devices and prove they still work."""

__version__ = "0.1.0"


_API = ("build", "validate", "sweep", "load_report", "BuildResult")


def __getattr__(name: str):  # noqa: ANN202 - lazy: `import edgecompile` stays light (no torch)
    if name in _API:
        from edgecompile import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgecompile' has no attribute {name!r}")
