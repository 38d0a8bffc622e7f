"""Run TensorRT engines: named I/O tensors, ``execute_async_v3``, optional CUDA graphs.

Buffers are torch CUDA tensors (the engine's I/O dtypes); one execution context at a time, set
to the optimization profile that serves the batch size best (the one tuned for it if any).
Timed runs are bracketed by CUDA events on the context's stream, so the latency is the device
time of one batch with no host copies. Imported only when the ``tensorrt`` backend is used.

Timed runs take their inputs in turn from several distinct device batches (``rotation``), so no
run reads an input left in L2 by the one before. With CUDA graphs each batch of the rotation has
its own graph, captured with that batch's addresses; without, the input addresses are set before
each timed run, outside the bracketing events. ``run`` uses the rotation's first batch.

TensorRT reports many failures only by a False return (``set_optimization_profile_async``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); every one is checked, and
the error goes out with the logger's last message. A capture whose ``execute_async_v3`` failed is
discarded instead of timing the replay of an empty graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chase_deploy.backends import rotation
from chase_deploy.backends.base import InputSpec, Timer
from train.errors import BadInput, one_line

DEVICE = "cuda"


@dataclass
class _Prepared:
    batch: int
    context: object
    stream: object
    buffers: dict  # name -> torch tensor: the rotation's first inputs and the outputs
    rotation: list[dict]  # per rotated batch: input name -> torch tensor (the first is buffers')
    graphs: list | None  # one CUDA graph per rotated batch, or None (runs go without graphs)

    def input_addresses(self, turn: int) -> dict[str, int]:
        return {name: t.data_ptr() for name, t in self.rotation[turn].items()}


class TrtRunner:
    """One deserialized engine and the execution context prepared for the current batch size."""

    def __init__(self, plan: bytes, source: str | Path, cuda_graph: bool = True):
        import tensorrt as trt

        from chase_deploy.backends.trt.logger import trt_logger

        self.source = str(source)
        self.logger = trt_logger()
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BadInput(
                f"TensorRT {trt.__version__} cannot load the engine {self.source} "
                f"({self.logger.last_error() or 'deserialization failed'}): it was built by another "
                f"TensorRT version or for another GPU; rebuild it here with `chase-deploy build`"
            )
        self.cuda_graph = cuda_graph
        self.graphs_used = False
        self.graph_failure = ""  # why a CUDA graph capture was discarded, if one was
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._current: _Prepared | None = None

    @classmethod
    def from_file(cls, path: str | Path, cuda_graph: bool = True) -> TrtRunner:
        """Load an engine file after checking its sidecar against this machine."""
        from chase_deploy.backends.trt.sidecar import check_engine_compatible, read_sidecar

        sidecar = read_sidecar(path)
        if sidecar is not None:
            check_engine_compatible(sidecar, path)
        return cls(Path(path).read_bytes(), path, cuda_graph)

    @property
    def inputs(self) -> list[InputSpec]:
        """Inputs with the batch axis as None when it is dynamic."""
        specs = []
        for name in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dims = tuple(None if d < 0 else int(d) for d in shape)
            specs.append(
                InputSpec(name, dims, np.dtype(_numpy_dtype(self.engine.get_tensor_dtype(name))))
            )
        return specs

    def batch_range(self) -> list[tuple[int, int, int]]:
        """(min, opt, max) batch of every optimization profile (one entry for static engines)."""
        name = self.input_names[0]
        if self.engine.get_tensor_shape(name)[0] >= 0:
            fixed = int(self.engine.get_tensor_shape(name)[0])
            return [(fixed, fixed, fixed)]
        ranges = []
        for p in range(self.engine.num_optimization_profiles):
            lo, opt, hi = self.engine.get_tensor_profile_shape(name, p)
            ranges.append((int(lo[0]), int(opt[0]), int(hi[0])))
        return ranges

    def check_batches(self, batches: Sequence[int]) -> None:
        ranges = self.batch_range()
        for b in batches:
            if not any(lo <= b <= hi for lo, _, hi in ranges):
                covered = ", ".join(f"{lo}..{hi}" for lo, _, hi in ranges)
                raise BadInput(
                    f"engine {self.source} runs batch sizes {covered}, not {b}: rebuild it with "
                    f"`chase-deploy build --batch MIN:OPT:MAX` covering {b}"
                )

    def _profile_for(self, batch: int) -> int:
        ranges = self.batch_range()
        tuned = [i for i, (lo, opt, hi) in enumerate(ranges) if opt == batch]
        fits = [i for i, (lo, _, hi) in enumerate(ranges) if lo <= batch <= hi]
        return (tuned or fits or [0])[0]

    def prepare(self, batch: int) -> _Prepared:
        """Context, stream and device buffers for ``batch``; CUDA graph captured when enabled.

        One batch size is prepared at a time: preparing another releases the previous context
        first (and invalidates its timer), so no two contexts ever share an optimization profile.
        """
        if self._current is not None and self._current.batch == batch:
            return self._current
        import torch

        self.check_batches([batch])
        self.release()
        context = self.engine.create_execution_context()
        if context is None:
            self._fail("create_execution_context()")
        stream = torch.cuda.Stream()
        self.configure(context, batch, stream.cuda_stream)
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        count = rotation.rotation_count(rotation.batch_bytes(self.inputs, batch))
        turns = [self._random_inputs(batch, generator) for _ in range(count)]
        buffers = dict(turns[0])
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            dtype = _torch_dtype(self.engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, dtype=dtype, device=DEVICE)
        self.set_addresses(context, {name: t.data_ptr() for name, t in buffers.items()})
        torch.cuda.synchronize()
        self._enqueue(context, stream)  # the first run allocates; graphs capture after it
        stream.synchronize()
        self._current = _Prepared(batch, context, stream, buffers, turns, None)
        if self.cuda_graph:
            self._current.graphs = self._capture_rotation(self._current)
        return self._current

    def _random_inputs(self, batch: int, generator) -> dict:
        """One batch of random device inputs in the engine's input dtypes."""
        import torch

        tensors = {}
        for spec in self.inputs:
            shape = spec.at_batch(batch)
            dtype = _torch_dtype(self.engine.get_tensor_dtype(spec.name))
            if dtype.is_floating_point:
                t = torch.randn(shape, generator=generator, device=DEVICE).to(dtype)
            else:
                t = torch.zeros(shape, dtype=dtype, device=DEVICE)
            tensors[spec.name] = t
        return tensors

    def _capture_rotation(self, prepared: _Prepared) -> list | None:
        """One graph per rotated batch, each captured with that batch's input addresses; None if
        any capture is discarded. The context is left pointing at the first batch."""
        graphs = []
        for turn in range(len(prepared.rotation)):
            self.set_addresses(prepared.context, prepared.input_addresses(turn))
            graph = self._capture(prepared.context, prepared.stream)
            if graph is None:
                graphs = None
                self.graphs_used = False
                break
            graphs.append(graph)
        self.set_addresses(prepared.context, prepared.input_addresses(0))
        return graphs

    def configure(self, context, batch: int, stream_handle: int) -> None:
        """Select the optimization profile for ``batch`` and set every input's shape, checked."""
        if self.engine.num_optimization_profiles > 1:
            profile = self._profile_for(batch)
            if not context.set_optimization_profile_async(profile, stream_handle):
                self._fail(f"set_optimization_profile_async({profile})")
        for spec in self.inputs:
            shape = spec.at_batch(batch)
            if not context.set_input_shape(spec.name, shape):
                self._fail(f"set_input_shape({spec.name!r}, {shape})")

    def set_addresses(self, context, addresses: dict[str, int]) -> None:
        """Point every I/O tensor at its device buffer, checked."""
        for name, pointer in addresses.items():
            if not context.set_tensor_address(name, pointer):
                self._fail(f"set_tensor_address({name!r})")

    def _fail(self, call: str):
        raise RuntimeError(
            f"TensorRT {call} failed for {self.source}: "
            f"{self.logger.last_error() or 'no error was logged'}"
        )

    def release(self) -> None:
        """Drop the prepared context, its graph and buffers (graph before context)."""
        current, self._current = self._current, None
        if current is not None:
            current.graphs = None
            current.buffers.clear()
            current.rotation.clear()
            current.context = None

    def _enqueue(self, context, stream) -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            self._fail("execute_async_v3")

    def _capture(self, context, stream):
        """A CUDA graph of one ``execute_async_v3``; None (runs go without a graph) when the
        capture fails or the enqueue inside it reports failure, so an empty graph is never
        replayed and timed."""
        import sys

        import torch

        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=stream):
                if not context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError(
                        f"execute_async_v3 returned False during capture "
                        f"({self.logger.last_error() or 'no error was logged'})"
                    )
        except Exception as e:  # some engines cannot be captured; run them without a graph
            torch.cuda.synchronize()
            self.graph_failure = one_line(e)
            print(
                f"[chase-deploy] {self.source}: CUDA graph capture discarded, running without "
                f"a graph: {self.graph_failure}",
                file=sys.stderr,
            )
            return None
        self.graphs_used = True
        return graph

    def _launch(self, prepared: _Prepared, turn: int = 0) -> None:
        """Run the rotation's batch ``turn`` (its graph, or an enqueue with the addresses the
        caller set)."""
        import torch

        if prepared.graphs is not None:
            with torch.cuda.stream(prepared.stream):
                prepared.graphs[turn].replay()
        else:
            self._enqueue(prepared.context, prepared.stream)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One batch from host arrays to host arrays (fp32 copies of bf16 outputs)."""
        import torch

        batch = int(next(iter(feeds.values())).shape[0])
        prepared = self.prepare(batch)
        for name, array in feeds.items():
            target = prepared.buffers[name]
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype))
        if prepared.graphs is None:
            self.set_addresses(prepared.context, prepared.input_addresses(0))
        torch.cuda.synchronize()
        self._launch(prepared)
        prepared.stream.synchronize()
        outputs = []
        for name in self.output_names:
            tensor = prepared.buffers[name]
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            outputs.append(tensor.cpu().numpy())
        return outputs

    def timer(self, batch: int) -> Timer:
        import torch

        prepared = self.prepare(batch)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        turns = itertools.cycle(range(len(prepared.rotation)))
        rebind = prepared.graphs is None and len(prepared.rotation) > 1

        def once() -> float:
            turn = next(turns)
            if rebind:  # host calls, before the bracket opens
                self.set_addresses(prepared.context, prepared.input_addresses(turn))
            begin.record(prepared.stream)
            self._launch(prepared, turn)
            end.record(prepared.stream)
            end.synchronize()
            return begin.elapsed_time(end)

        return once

    def close(self) -> None:
        self.release()


def _dtype_table() -> list[tuple[str, str, str]]:
    """(TensorRT DataType member, torch dtype, numpy dtype) for the types engines use."""
    return [
        ("FLOAT", "float32", "float32"),
        ("HALF", "float16", "float16"),
        ("BF16", "bfloat16", "float32"),
        ("INT8", "int8", "int8"),
        ("INT32", "int32", "int32"),
        ("INT64", "int64", "int64"),
        ("BOOL", "bool", "bool"),
        ("UINT8", "uint8", "uint8"),
    ]


def _lookup(trt_dtype, column: int):
    import tensorrt as trt

    for row in _dtype_table():
        member = getattr(trt.DataType, row[0], None)
        if member is not None and member == trt_dtype:
            return row[column]
    raise BadInput(f"engine tensor type {trt_dtype} is not supported by chase-deploy's runner")


def _torch_dtype(trt_dtype):
    import torch

    return getattr(torch, _lookup(trt_dtype, 1))


def _numpy_dtype(trt_dtype) -> str:
    return _lookup(trt_dtype, 2)
