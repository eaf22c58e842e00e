"""Running compiled artifacts: generation for generative VLMs on ONNX Runtime."""
