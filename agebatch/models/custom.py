"""Model A: our own multi-output CNN, built for accuracy per FLOP on a CPU.

A MobileNet-style trunk of depthwise-separable blocks (3x3 depthwise + 1x1 pointwise,
each with BatchNorm and ReLU), stride 2 at the start of each stage, then global
average pooling and the shared heads. Only Conv/DepthwiseConv/BN/ReLU/pool/Dense,
so it exports cleanly to ONNX and TensorRT. Sizes are arguments so tests can train
a tiny one in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agebatch.models.heads import AgeHead, heads, preprocess

ARCHITECTURE = "agebatch-custom-cnn"
PREPROCESSING = "RGB uint8 -> x / 127.5 - 1 (in graph)"

# Trunk sizes `agebatch train custom --width` offers: (stem, widths, depths). Extra depth at the
# 8x8 and 4x4 stages is almost free on a CPU (measured with `agebatch bench train`-style steps,
# batch 64, 2 cores: "deep" 175-182 img/s against 179 for "default", with 2.1x the parameters),
# because a step's time goes to the high-resolution early layers; extra width there is not.
TRUNKS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "small": (16, (32, 64, 128), (1, 1, 1)),
    "default": (32, (64, 128, 256, 384), (2, 2, 3, 2)),
    "deep": (32, (64, 128, 256, 512), (2, 3, 5, 3)),
}


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _separable(x: Any, filters: int, stride: int, name: str) -> Any:
    from keras import layers

    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, 1, f"{name}_pw")


def build_custom(
    *,
    input_size: tuple[int, int] = (128, 128),
    stem: int = TRUNKS["default"][0],
    widths: Sequence[int] = TRUNKS["default"][1],
    depths: Sequence[int] = TRUNKS["default"][2],
    age_head: AgeHead = "bins",
    hidden: int = 128,
    dropout: float = 0.2,
    name: str = "modelA",
) -> Any:
    """Build (not compile) Model A: uint8 (N, H, W, 3) -> {"age", "gender_prob"}."""
    import keras
    from keras import layers

    if len(widths) != len(depths):
        raise ValueError("widths and depths need one entry per stage")
    inputs = keras.Input((*input_size, 3), dtype="uint8", name="image")
    x = preprocess(inputs, 1 / 127.5, -1.0)
    x = _conv_bn(x, stem, 3, 2, "stem")
    for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        for b in range(depth):
            x = _separable(x, width, 2 if b == 0 else 1, f"s{s}b{b}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, heads(x, age_head=age_head, hidden=hidden, dropout=dropout), name=name)
