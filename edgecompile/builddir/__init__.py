"""The build directory: stage outputs, the manifest that makes reruns incremental, atomic writes."""
