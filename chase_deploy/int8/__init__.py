"""INT8 post-training quantization of any ONNX model the project runs (``chase-deploy quantize``).

Everything numerical is ONNX Runtime's (``onnxruntime.quantization``: pre-processing, calibration,
Q/DQ insertion); this package chooses the settings for each target (``targets``), feeds the
calibration data (``calibration``), inspects what came out (``inspect_qdq``) and checks it on the
recipe's validation set (``quantize``).
"""
