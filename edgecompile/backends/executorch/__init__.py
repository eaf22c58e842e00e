"""ExecuTorch backend with the XNNPACK delegate: one ``.pte`` per component, run through ``executorch.runtime``.

Importing this package never imports executorch (an optional SDK): ``create_backend`` returns an
object whose ``availability()`` says when executorch is missing, and every module below imports
executorch / torchao inside its functions.
"""

from edgecompile.backends.base import Backend


def create_backend() -> Backend:
    from edgecompile.backends.executorch.backend import ExecuTorchBackend

    return ExecuTorchBackend()
