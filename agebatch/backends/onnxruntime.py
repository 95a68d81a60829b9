"""ONNX Runtime backend: the default on CPUs, and on NVIDIA GPUs through the CUDA execution provider.

`device` picks the execution provider: "cpu"; "cuda" (exit 2 when this ONNX Runtime has
no CUDA provider, i.e. the `onnxruntime` wheel rather than `onnxruntime-gpu`, or cannot
start it); "auto" (CUDA when present, else the CPU). On CUDA, batches go through I/O binding
from a pinned host buffer (CuPy's, when CuPy is installed), so the GPU receives the
uint8 pixels by DMA and the graph's first op scales them there: 1 byte per channel over
PCIe instead of 4.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agebatch.artifacts import read_sidecar
from agebatch.backends.base import DEVICES, Predictions, check_batch, predict_in_chunks
from agebatch.backends.probe import module_installed
from agebatch.errors import AgebatchError
from agebatch.models.card import INPUT_NAME, OUTPUT_AGE, OUTPUT_GENDER, OUTPUT_NAMES

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(device: str, available: list[str]) -> tuple[list[str], str | None]:
    """(execution providers, fastest first; a one-line note for the user, or None). `cuda` without CUDA: exit 2."""
    if device not in DEVICES:
        raise AgebatchError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and CUDA not in available):
        return [CPU], None
    if CUDA in available:
        return [CUDA, CPU], None
    # `cuda` means CUDA: a run that asked for the GPU and quietly took hours on the CPU is the worse failure.
    raise AgebatchError(
        "--device cuda: this ONNX Runtime has no CUDA provider (install the `onnxruntime-gpu` wheel: "
        "pip install 'agebatch[gpu-ort]'); use --device auto to run on the GPU when there is one, else the CPU"
    )


class PinnedInput:
    """A reusable host buffer for one input, page-locked through CuPy when it is installed (else ordinary memory)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        n = int(np.prod(shape))
        self.pinned = False
        if module_installed("cupy"):
            try:
                import cupy  # pyright: ignore[reportMissingImports]

                self._memory = cupy.cuda.alloc_pinned_memory(n)
                self.array = np.frombuffer(self._memory, np.uint8, n).reshape(shape)
                self.pinned = True
                return
            except Exception:  # no driver or no device: ordinary memory still works
                pass
        self.array = np.empty(shape, np.uint8)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        path: str,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        chunk: int | None = None,
        device: str = "auto",
        io_binding: bool | None = None,
    ) -> None:
        from agebatch.backends.ortenv import onnxruntime

        ort = onnxruntime()

        meta = read_sidecar(path, kind="onnx")
        self.card = meta["card"]
        self.precision = str(meta["precision"])
        self.path = path
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        self.note: str | None = None
        if providers is None:
            providers, self.note = choose_providers(device, available)
        missing = [p for p in providers if p not in available]
        if missing:
            raise AgebatchError(f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(available)})")
        self.providers = providers
        # GPUs want big batches; CPUs want cache-sized ones (see predict).
        on_gpu = providers[0] != CPU
        self.chunk = chunk or (64 if not on_gpu else 1024)
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:
            raise AgebatchError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0]}") from e
        if device == "cuda" and CUDA not in self.session.get_providers():
            # onnxruntime-gpu without a usable GPU or driver falls back to the CPU with only a log line.
            raise AgebatchError(
                "--device cuda: ONNX Runtime has the CUDA provider but could not start it (no GPU, or its driver or "
                "CUDA/cuDNN libraries are missing); use --device auto to fall back to the CPU"
            )
        names = {o.name for o in self.session.get_outputs()}
        if {OUTPUT_AGE, OUTPUT_GENDER} - names or self.session.get_inputs()[0].name != INPUT_NAME:
            raise AgebatchError(f"{path} does not have agebatch's inputs/outputs ({INPUT_NAME} -> {OUTPUT_AGE}, {OUTPUT_GENDER})")
        self.outputs = [k for k in OUTPUT_NAMES if k in names]  # the age read-outs only where the model has them
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._input: PinnedInput | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_size

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, (np.asarray(a) for a in self.session.run(self.outputs, {INPUT_NAME: x})), strict=True))

    def _run_bound(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Copy the chunk into the (pinned) host buffer, bind it and the outputs, run, and read the outputs back."""
        if self._input is None or len(self._input.array) < len(x):
            self._input = PinnedInput((max(len(x), self.chunk if self.chunk < 1 << 20 else len(x)), *x.shape[1:]))
        buf = self._input.array[: len(x)]
        buf[...] = x
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cpu", 0, np.uint8, list(buf.shape), buf.ctypes.data)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.outputs, (np.asarray(a) for a in binding.copy_outputs_to_cpu()), strict=True))

    def predict(self, images: np.ndarray) -> Predictions:
        # Large batches run as chunks: on a CPU, ORT's throughput falls past ~64 faces per call
        # (measured: Model A 2,362 img/s at 64 vs 2,129 at 256; Lite0 553 vs 397), as
        # the activations stop fitting in cache. Callers keep any batch size they like.
        run: Any = self._run_bound if self.io_binding else self._run
        return predict_in_chunks(run, check_batch(images, self.input_size), self.chunk)
