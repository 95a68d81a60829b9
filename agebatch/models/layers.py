"""agebatch's own Keras layers, registered for loading (``agebatch>Name``).

Each is a few tensor ops that tf2onnx turns into plain ONNX (Slice, Concat, MatMul, Pow,
Clip, ArgMax), so ONNX Runtime and TensorRT run them like any other node. Importing this
module is what lets `keras.saving.load_model` read an agebatch model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from agebatch.ages import AGE_BIN_CENTERS, AGE_GROUPS, INTERVAL, group_matrix


@keras.saving.register_keras_serializable(package="agebatch")
class WithMirror(keras.layers.Layer):
    """(N, H, W, C) -> (2N, H, W, C): the batch followed by its left-right mirror."""

    def call(self, x: Any) -> Any:
        # A reversed slice, not ops.flip: tf2onnx turns the slice into one ONNX Slice with step -1,
        # but flip into Transpose + ReverseSequence + Transpose, which took ~1.7x as long in ORT
        # (17 vs 10 ms per 64 uint8 faces, measured in one run).
        return keras.ops.concatenate([x, x[:, :, ::-1]], axis=0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n = input_shape[0]
        return (None if n is None else 2 * n, *input_shape[1:])


@keras.saving.register_keras_serializable(package="agebatch")
class ReverseChannels(keras.layers.Layer):
    """RGB -> BGR (the "caffe" backbones' channel order), as one reversed Slice in ONNX."""

    def call(self, x: Any) -> Any:
        return x[..., ::-1]


@keras.saving.register_keras_serializable(package="agebatch")
class MeanOfHalves(keras.layers.Layer):
    """(2N, ...) -> (N, ...): mean of the first and second half of the batch."""

    def call(self, x: Any) -> Any:
        n = keras.ops.shape(x)[0] // 2  # pyright: ignore[reportOptionalSubscript, reportOptionalOperand]  # batch is known when called
        return (x[:n] + x[n:]) * 0.5

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n = input_shape[0]
        return (None if n is None else n // 2, *input_shape[1:])


@keras.saving.register_keras_serializable(package="agebatch")
class WeightedSum(keras.layers.Layer):
    """[x_1, ..., x_k] -> sum of w_i * x_i: an ensemble's average of its members' outputs (`models/serving.py`)."""

    def __init__(self, member_weights: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.member_weights = [float(w) for w in member_weights]

    def call(self, xs: list[Any]) -> Any:
        out = xs[0] * self.member_weights[0]
        for w, x in zip(self.member_weights[1:], xs[1:], strict=True):
            out = out + x * w
        return out

    def compute_output_shape(self, input_shape: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "member_weights": self.member_weights}


@keras.saving.register_keras_serializable(package="agebatch")
class CoralLevels(keras.layers.Layer):
    """(N, 1) shared score -> (N, K) P(age > k) = sigmoid(score + b_k), one bias per threshold (CORAL)."""

    def __init__(self, levels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.levels = int(levels)

    def build(self, input_shape: Any) -> None:
        # coral-pytorch's start: evenly spaced, descending biases, so the levels start ordered.
        start = np.arange(self.levels, 0, -1, dtype=np.float32) / self.levels
        init = keras.initializers.Constant(start)  # pyright: ignore[reportArgumentType]  # Keras takes arrays here
        self.bias = self.add_weight(shape=(self.levels,), initializer=init, name="bias")

    def call(self, score: Any) -> Any:
        ops: Any = keras.ops
        return ops.sigmoid(score + self.bias)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.levels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "levels": self.levels}


@keras.saving.register_keras_serializable(package="agebatch")
class LevelsToBins(keras.layers.Layer):
    """(N, K) P(age > k) -> (N, K + 1) P(age = k): differences of neighbours, negatives cut, renormalised."""

    def call(self, levels: Any) -> Any:
        ops: Any = keras.ops  # keras.ops' stubs return unions with None; these are tensors
        n = ops.shape(levels)[0]
        ext = ops.concatenate([ops.ones((n, 1)), levels, ops.zeros((n, 1))], axis=1)
        p = ops.relu(ext[:, :-1] - ext[:, 1:])
        return p / (ops.sum(p, axis=1, keepdims=True) + 1e-7)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[1] + 1)


@keras.saving.register_keras_serializable(package="agebatch")
class AgeStats(keras.layers.Layer):
    """(N, 101) age distribution -> spread, 80% interval and age group, after a calibration temperature.

    The graph twin of `agebatch.ages.distribution_stats` (tested equal): the temperature
    is applied as ``p ** (1/T)`` renormalised, which is a temperature on the logits for a
    softmax head; the cumulative sums are a product with a constant triangular matrix, so
    the graph has no CumSum or gather for an FP16 or TensorRT build to trip on.
    """

    def __init__(self, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, p: Any) -> Any:
        ops: Any = keras.ops  # keras.ops' stubs return unions with None; these are tensors
        k = len(AGE_BIN_CENTERS)
        t = ops.power(ops.maximum(p, 0.0), 1.0 / self.temperature)
        t = t / ops.sum(t, axis=1, keepdims=True)
        centers = ops.convert_to_tensor(AGE_BIN_CENTERS.reshape(-1, 1))
        mean = ops.matmul(t, centers)
        var = ops.matmul(t, centers * centers) - mean * mean + 1.0 / 12.0
        std = ops.sqrt(ops.maximum(var, 0.0))
        before = ops.matmul(t, ops.convert_to_tensor(np.triu(np.ones((k, k), np.float32), 1)))  # C_{k-1}
        safe = ops.maximum(t, 1e-12)

        def quantile(q: float) -> Any:
            inside = ops.clip((q - before) / safe, 0.0, 1.0)
            return ops.maximum(ops.sum(inside, axis=1, keepdims=True) - 0.5, 0.0)

        # The first most probable group, as a float. Not ops.argmax: Keras' TensorFlow argmax bitcasts floats
        # (to order -0.0 before 0.0), and ONNX has no Bitcast; a min over (index, or index + groups where not
        # the max) exports as ReduceMax/ReduceMin.
        groups = ops.matmul(t, ops.convert_to_tensor(group_matrix()))
        index = ops.convert_to_tensor(np.arange(len(AGE_GROUPS), dtype=np.float32))
        not_max = ops.cast(groups < ops.max(groups, axis=1, keepdims=True), "float32")
        group = ops.min(index + not_max * len(AGE_GROUPS), axis=1, keepdims=True)
        return std, quantile(INTERVAL[0]), quantile(INTERVAL[1]), group

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        one = (input_shape[0], 1)
        return (one, one, one, one)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}
