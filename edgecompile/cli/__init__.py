"""The click CLI: a thin shell over stages, backends and reports."""
