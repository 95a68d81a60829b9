"""TensorRT backend and engine builder: thin wrappers over the TensorRT 10/11 Python API.

Precision is decided in the ONNX graph, not here: `agebatch.backends.export` writes an FP16
ONNX (FP32 I/O, the age head kept FP32) that ONNX Runtime tests on any CPU, and the
builder parses it as a *strongly typed* network, so TensorRT runs exactly the graph
that was tested. (Strong typing is also the path TensorRT 11 keeps; the weakly-typed
``BuilderFlag.FP16`` route is deprecated.)

Device memory goes through CuPy: pinned host buffers, one CUDA stream per slot, and
two slots so the copies of one chunk overlap the compute of the other. No GPU and
no TensorRT here, so this file is exercised only where both exist (tests skip
elsewhere, saying why).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from agebatch.artifacts import read_sidecar
from agebatch.backends.base import Predictions, check_batch
from agebatch.backends.probe import gpu_available, module_installed
from agebatch.errors import AgebatchError
from agebatch.io.atomic import write_bytes_atomic
from agebatch.models.card import INPUT_NAME, OUTPUT_NAMES

if TYPE_CHECKING:
    import tensorrt as trt


def require_tensorrt() -> None:
    """Check that TensorRT and a GPU are here, or say in one sentence what is missing.

    Callers then ``import tensorrt as trt`` themselves, so the type checker sees the
    real module (``tensorrt-stubs``) and verifies every call below against its API.
    """
    if not module_installed("tensorrt"):
        raise AgebatchError(
            "TensorRT is not installed (pip install 'agebatch[gpu]' on a machine with an NVIDIA GPU); "
            "`--target onnx` builds a portable engine instead."
        )
    if not gpu_available():
        raise AgebatchError("no CUDA GPU is visible (checked through CuPy); `--target onnx` builds a portable engine instead.")


def device_info() -> dict[str, str]:
    import cupy  # pyright: ignore[reportMissingImports]

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"gpu": name, "compute_capability": f"{props['major']}.{props['minor']}"}


def build_engine_file(
    onnx_path: str, engine_path: str, *, min_batch: int, opt_batch: int, max_batch: int, timing_cache: str
) -> dict[str, Any]:
    """Parse `onnx_path` strongly typed, build with a batch profile and a timing cache, write `engine_path`."""
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise AgebatchError(f"TensorRT cannot parse {onnx_path}: {errors}")
    dims = network.get_input(0).shape
    shape = [dims[i] for i in range(1, len(dims))]  # Dims indexes but does not promise iteration
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(trt.Dims([n, *shape]) for n in (min_batch, opt_batch, max_batch)))
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if os.path.isfile(timing_cache):
        with open(timing_cache, "rb") as f:
            cache_bytes = f.read()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AgebatchError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)", 1)
    write_bytes_atomic(engine_path, bytes(memoryview(serialized)))
    timing = config.get_timing_cache()
    if timing is not None:
        write_bytes_atomic(timing_cache, bytes(memoryview(timing.serialize())))
    return {"version": trt.__version__, **device_info(), "strongly_typed": True}


class _Slot:
    """One in-flight chunk: its execution context, stream and buffers."""

    def __init__(self, engine: trt.ICudaEngine, max_batch: int, size: tuple[int, int], outputs: list[str]) -> None:
        import cupy  # pyright: ignore[reportMissingImports]

        self.context = engine.create_execution_context()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        n_in = max_batch * size[0] * size[1] * 3
        self.host_in = np.frombuffer(cupy.cuda.alloc_pinned_memory(n_in), np.uint8, n_in).reshape(max_batch, *size, 3)
        self.host_out = {
            k: np.frombuffer(cupy.cuda.alloc_pinned_memory(max_batch * 4), np.float32, max_batch).reshape(max_batch, 1)
            for k in outputs  # every agebatch output is float32 (N, 1)
        }
        self.dev_in = cupy.empty((max_batch, *size, 3), cupy.uint8)
        self.dev_out = {k: cupy.empty((max_batch, 1), cupy.float32) for k in self.host_out}
        self.pending = 0  # rows of the chunk in flight

    def launch(self, chunk: np.ndarray) -> None:
        n = len(chunk)
        self.host_in[:n] = chunk
        self.dev_in[:n].set(self.host_in[:n], stream=self.stream)
        # Each call reports failure by returning False (a shape outside the profile, a bad address), not by raising.
        ok = self.context.set_input_shape(INPUT_NAME, (n, *chunk.shape[1:]))
        ok = self.context.set_tensor_address(INPUT_NAME, self.dev_in.data.ptr) and ok
        for k, buf in self.dev_out.items():
            ok = self.context.set_tensor_address(k, buf.data.ptr) and ok
        if not ok or not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT refused a chunk of {n} (input shape, tensor addresses or execute_async_v3)")
        for k, buf in self.dev_out.items():
            buf[:n].get(stream=self.stream, out=self.host_out[k][:n])
        self.pending = n

    def collect(self) -> Predictions:
        self.stream.synchronize()
        n, self.pending = self.pending, 0
        return Predictions.from_outputs({k: v[:n, 0].copy() for k, v in self.host_out.items()}, n)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str, *, slots: int = 2) -> None:
        require_tensorrt()
        import tensorrt as trt

        meta = read_sidecar(path, kind="tensorrt")
        built = meta.get("tensorrt", {})
        here = {"version": trt.__version__, **device_info()}
        if built.get("version") != here["version"] or built.get("compute_capability") != here["compute_capability"]:
            raise AgebatchError(
                f"{path} was built for TensorRT {built.get('version')} on {built.get('gpu')} "
                f"(sm {built.get('compute_capability')}); this machine has TensorRT {here['version']} on {here['gpu']} "
                f"(sm {here['compute_capability']}): rebuild it with `agebatch build-engine`"
            )
        self.card = meta["card"]
        self.precision = str(meta["precision"])
        self.max_batch = int(meta["batch_profile"]["max"])
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise AgebatchError(f"TensorRT could not load {path}; rebuild it with `agebatch build-engine`")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        outputs = [k for k in OUTPUT_NAMES if k in names]  # the age read-outs only where the model has them
        self._slots = [_Slot(self.engine, self.max_batch, self.input_size, outputs) for _ in range(slots)]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_size

    def predict(self, images: np.ndarray) -> Predictions:
        x = check_batch(images, self.input_size)
        parts: list[Predictions] = []
        chunks = [x[i : i + self.max_batch] for i in range(0, len(x), self.max_batch)]
        # Round-robin over slots: launching chunk k+1 before collecting chunk k overlaps its copies with k's compute.
        for k, chunk in enumerate(chunks):
            slot = self._slots[k % len(self._slots)]
            if slot.pending:
                parts.append(slot.collect())
            slot.launch(chunk)
        for k in range(len(chunks)):
            slot = self._slots[(len(chunks) + k) % len(self._slots)]
            if slot.pending:
                parts.append(slot.collect())
        return Predictions.concat(parts)
