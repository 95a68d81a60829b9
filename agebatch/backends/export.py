"""Keras -> ONNX (FP32, and FP16 with FP32 I/O) and parity checks between backends.

The ONNX graph keeps the model's contract: input ``image`` uint8 (N, H, W, 3) with a
dynamic batch, outputs ``age`` and ``gender_prob`` float32 (N, 1). NHWC is kept: the
model's first op is the in-graph preprocessing, and ONNX Runtime and TensorRT both
insert the layout change themselves where it pays.

FP16: every float op becomes FP16 except the age head (layers named ``age*``),
Softmax, and I/O. The age head turns 101 bin probabilities into years by summing
many small products, where FP16's 11-bit mantissa loses resolution, and it is tiny,
so it stays FP32 at no measurable cost. Parity is checked after every build.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from agebatch.backends.base import Predictions
from agebatch.io.atomic import AtomicFile
from agebatch.models.card import INPUT_NAME

#: Nodes whose Keras layer name starts with "age" (tf2onnx names them "model/age_bins_1/MatMul").
AGE_HEAD_PATTERN = re.compile(r"(^|/)age[^/]*/")
DEFAULT_OPSET = 17


def export_onnx(model: Any, path: str, *, opset: int = DEFAULT_OPSET) -> str:
    """Write `model` (Keras, uint8 input, dict outputs) as FP32 ONNX with a dynamic batch."""
    import tensorflow as tf
    import tf2onnx

    h, w, c = model.inputs[0].shape[1:]
    spec = (tf.TensorSpec((None, h, w, c), tf.uint8, name=INPUT_NAME),)

    @tf.function(input_signature=spec, autograph=False)
    def serve(image: Any) -> Any:
        return model(image, training=False)

    with AtomicFile(path) as out:
        tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset, output_path=out.tmp)
    return path


def convert_fp16(src: str, dst: str) -> list[str]:
    """Write an FP16 copy of `src` with FP32 inputs/outputs and the age head in FP32.

    Returns the names of the nodes kept in FP32 because of the age-head rule.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(src)
    keep = [n.name for n in model.graph.node if AGE_HEAD_PATTERN.search(n.name)]
    fp16 = convert_float_to_float16(
        model,
        keep_io_types=True,
        node_block_list=keep,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Softmax"],
    )
    with AtomicFile(dst) as out:
        onnx.save(fp16, out.tmp)
    return keep


def parity(reference: Predictions, candidate: Predictions) -> dict[str, float]:
    """How far `candidate` predictions are from `reference` ones (age and interval in years, gender at 0.5, age group)."""
    ra, rg = reference.age, reference.gender_prob
    ca, cg = candidate.age, candidate.gender_prob
    diff = np.abs(ra.astype(np.float64) - ca.astype(np.float64))
    extra: dict[str, float] = {}
    if reference.has_distribution:
        ends = [
            np.abs(getattr(reference, k).astype(np.float64) - getattr(candidate, k)) for k in ("age_p10", "age_p90", "age_std")
        ]
        extra = {
            "max_interval_diff": float(max(e.max() for e in ends)) if len(ra) else 0.0,
            "age_group_agreement": float((reference.age_group == candidate.age_group).mean()) if len(ra) else 1.0,
        }
    return {
        "n": len(ra),
        "max_age_diff": float(diff.max()) if len(diff) else 0.0,
        "mean_age_diff": float(diff.mean()) if len(diff) else 0.0,
        "max_gender_prob_diff": float(np.abs(rg.astype(np.float64) - cg).max()) if len(rg) else 0.0,
        "gender_agreement": float(((rg >= 0.5) == (cg >= 0.5)).mean()) if len(rg) else 1.0,
        "reference_age_std": float(ra.std()) if len(ra) else 0.0,
        **extra,
    }
