"""TensorRT in one place, laid out like Polygraphy's ``backend/trt``:

- ``loader``: ONNX -> serialized engine (parser, builder config, profiles, timing cache);
- ``sidecar``: the ``ENGINE.json`` written beside an engine, and the check that it runs here;
- ``precision``: fp16/bf16 copies of an ONNX model for strongly typed TensorRT;
- ``runner``: a deserialized engine run with named I/O tensors and optional CUDA graphs;
- ``backend``: the ``tensorrt`` backend of ``bench`` on top of the runner;
- ``logger``: the TensorRT logger both loader and runner use.

``tensorrt`` and CUDA are imported inside functions only, so this package imports anywhere.
"""
