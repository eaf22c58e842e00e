"""edgecompile: compile vision-language models for edge devices and prove they still work."""

__version__ = "0.1.0"
