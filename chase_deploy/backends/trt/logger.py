"""The one TensorRT logger of the process, shared by the loader and the runner.

TensorRT keeps the first logger it is given for the whole process: a ``Builder`` or ``Runtime``
made later with another logger still reports to the first one. So there is exactly one, made
on first use, and every ``trt.Builder``, ``trt.OnnxParser`` and ``trt.Runtime`` gets it;
otherwise the errors behind a failed build or run would land in a logger nobody reads.
"""

from __future__ import annotations

import collections
import functools

KEEP_ERRORS = 50


@functools.cache
def trt_logger():
    """The process-wide TensorRT logger: keeps recent errors (for one-line messages) and prints
    warnings and errors to stderr.

    The class is defined here because its base class exists only once TensorRT is imported.
    """
    import sys

    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=KEEP_ERRORS)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

        def last_error(self) -> str:
            return self.errors[-1].strip().splitlines()[0] if self.errors else ""

    return _Logger()
