"""ONNX deployment: export the whole ``predict`` as a static graph, cache it, and run it in ONNX Runtime.

``graph`` is the exported computation, ``export`` writes the file (contract, metadata), ``cache`` names files and
TensorRT engines by what they depend on, ``session`` opens ONNX Runtime sessions with the best provider, and
``runner`` is the engine's ``DepthRunner`` counterpart for the onnxruntime backend.
"""
