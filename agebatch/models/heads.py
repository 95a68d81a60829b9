"""Input preprocessing and the two output heads shared by Model A and Model B (Keras).

Layer naming is a contract: every age-head layer's name starts with ``age`` so the
FP16 export can keep the whole age head in FP32 (`agebatch.export.AGE_HEAD_PATTERN`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

AgeHead = Literal["regression", "bins"]

#: Age bins of the distribution head: one per year 0..100 (older clipped into the last).
AGE_BIN_CENTERS = np.arange(0, 101, dtype=np.float32)


def preprocess(inputs: Any, scale: float, offset: float) -> Any:
    """uint8 RGB -> float32 ``x * scale + offset``, inside the graph."""
    from keras import layers

    return layers.Rescaling(scale, offset=offset, name="preprocess")(inputs)


def heads(features: Any, *, age_head: AgeHead = "bins", hidden: int = 128, dropout: float = 0.2) -> dict[str, Any]:
    """Age (years) and gender (P(female)) outputs on top of pooled features.

    ``bins``: softmax over one-year bins and the expected value as the prediction
    (a fixed, non-trainable Dense with the bin centers), which the age-estimation
    literature (DEX, mean-variance loss) finds more accurate than plain regression.
    ``regression``: a linear output in years.
    """
    from keras import initializers, layers

    x = layers.Dropout(dropout, name="head_dropout")(features)
    a = layers.Dense(hidden, activation="relu", name="age_hidden")(x)
    if age_head == "bins":
        probs = layers.Dense(len(AGE_BIN_CENTERS), activation="softmax", name="age_bins")(a)
        expect = layers.Dense(1, use_bias=False, trainable=False, name="age")
        age = expect(probs)
        expect.set_weights([AGE_BIN_CENTERS.reshape(-1, 1)])
    elif age_head == "regression":
        # Start near the pool's mean age so early epochs do not waste steps on the offset.
        start = initializers.Constant(33.0)
        age = layers.Dense(1, name="age", bias_initializer=start)(a)  # pyright: ignore[reportArgumentType]  # Keras infers str from its default
    else:
        raise ValueError(f"unknown age head {age_head!r}")
    g = layers.Dense(hidden // 2, activation="relu", name="gender_hidden")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender_prob")(g)
    return {"age": age, "gender_prob": gender}
