"""ONNX graph helpers shared by the backends that ship or start from an ONNX graph (ORT CPU, QNN, TensorRT, CoreML EP)."""
