"""The TensorRT logger shared by the loader and the runner."""

from __future__ import annotations


def trt_logger():
    """A TensorRT logger that keeps errors (for one-line messages) and prints warnings.

    Defined inside a function because its base class exists only once TensorRT is imported.
    """
    import sys

    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

        def last_error(self) -> str:
            return self.errors[-1].strip().splitlines()[0] if self.errors else ""

    return _Logger()
