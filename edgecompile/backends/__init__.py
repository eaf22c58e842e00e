"""Backends: turn a precision plan and ranges into a deployable artifact, and run it where possible.

Each backend imports its SDK inside its own module, so a missing SDK disables one backend with a
message and never the CLI.
"""
