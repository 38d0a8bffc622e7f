"""A stand-in ``tensorrt`` module that records what chase-deploy asks of it.

Only the calls the loader and the runner make exist. Each fake object remembers the logger it
was given, and the execution context can be told to fail one call the way TensorRT does: log an
error through the process logger and return False.
"""

from __future__ import annotations

import enum
import sys
import types

import onnx


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self):
        pass


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class TensorIOMode(enum.IntEnum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class Recorder:
    """Everything the fake module was asked, for the test to read."""

    def __init__(self):
        self.loggers: list = []
        self.network_flags: list[int] = []
        self.parsed: list[onnx.ModelProto] = []
        self.builder_flags: list = []
        self.profiles: list[dict] = []


class Profile:
    def __init__(self):
        self.shapes: dict = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class Config:
    def __init__(self, rec: Recorder):
        self.rec = rec

    def set_memory_pool_limit(self, pool, size):
        pass

    def set_flag(self, flag):
        self.rec.builder_flags.append(flag)

    def add_optimization_profile(self, profile):
        self.rec.profiles.append(profile.shapes)
        return len(self.rec.profiles) - 1


class Builder:
    def __init__(self, logger):
        self.rec = current.rec
        self.rec.loggers.append(logger)

    def create_network(self, flags):
        self.rec.network_flags.append(flags)
        return object()

    def create_builder_config(self):
        return Config(self.rec)

    def create_optimization_profile(self):
        return Profile()

    def build_serialized_network(self, network, config):
        return b"serialized plan"


class OnnxParser:
    def __init__(self, network, logger):
        self.rec = current.rec
        self.rec.loggers.append(logger)
        self.num_errors = 0

    def parse(self, data, path=None):
        self.rec.parsed.append(onnx.load_model_from_string(data))
        return True


class Engine:
    """A dynamic-batch engine with input ``input`` (Nx3x8x8), output ``logits`` and one
    optimization profile per batch size in ``batches`` (min = opt = max)."""

    def __init__(self, batches=(1, 4)):
        self.batches = list(batches)
        self.num_io_tensors = 2
        self.num_optimization_profiles = len(self.batches)

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return (-1, 3, 8, 8) if name == "input" else (-1, 10)

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name, profile):
        b = self.batches[profile]
        return ((b, 3, 8, 8),) * 3

    def create_execution_context(self):
        return Context()


class Runtime:
    def __init__(self, logger):
        current.rec.loggers.append(logger)

    def deserialize_cuda_engine(self, plan):
        return Engine()


class Context:
    """An execution context; ``fail`` names the one call that logs an error and returns False."""

    def __init__(self, fail: str = ""):
        self.fail = fail
        self.calls: list[tuple] = []
        self.batch = 1

    def _answer(self, call: str, *args) -> bool:
        self.calls.append((call, *args))
        if call == self.fail:
            sys.modules["tensorrt"].logged_error(f"IExecutionContext::{call}: Error Code 3")
            return False
        return True

    def set_optimization_profile_async(self, index, stream):
        return self._answer("set_optimization_profile_async", index)

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return self._answer("set_input_shape", name, tuple(shape))

    def get_tensor_shape(self, name):
        return (self.batch, 3, 8, 8) if name == "input" else (self.batch, 10)

    def set_tensor_address(self, name, pointer):
        return self._answer("set_tensor_address", name, pointer)

    def execute_async_v3(self, stream):
        return self._answer("execute_async_v3")


class _Current:
    rec = Recorder()


current = _Current()


def make_module(version: str) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module of ``version`` with an empty recorder."""
    current.rec = Recorder()
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    for obj in (
        ILogger,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        TensorIOMode,
        DataType,
        Builder,
        OnnxParser,
        Runtime,
    ):
        setattr(module, obj.__name__, obj)
    module.BuilderFlag = types.SimpleNamespace(FP16="FP16", BF16="BF16")
    module.recorder = current.rec

    def logged_error(message: str) -> None:
        from chase_deploy.backends.trt.logger import trt_logger

        trt_logger().log(Severity.ERROR, message)

    module.logged_error = logged_error
    return module
