"""Input preprocessing and the two output heads shared by Model A and Model B (Keras).

Layer naming is a contract: every age-head layer's name starts with ``age`` so the
FP16 export can keep the whole age head in FP32 (`agebatch.backends.export.AGE_HEAD_PATTERN`).
"""

from __future__ import annotations

from typing import Any, Literal

from agebatch.ages import AGE_BIN_CENTERS

AgeHead = Literal["bins", "regression", "coral"]
AGE_HEADS: tuple[str, ...] = ("bins", "regression", "coral")
#: Layer names the trainer puts a loss on, per head (besides "age" and "gender_prob").
#: Both distribution heads name their (N, 101) one-year distribution "age_bins" (`agebatch.models.serving`).
HEAD_LOSS_LAYER = {"bins": "age_bins", "coral": "age_levels", "regression": None}


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
    ``coral``: CORAL's ordinal head (Cao, Mirjalili & Raschka 2020): one shared score and
    100 ordered biases give P(age > k) for k = 0..99 (``age_levels``); their differences are
    the same one-year distribution the bins head has (``age_bins``), and the age is its
    expected value (CORAL's sum of the levels while they are ordered).
    """
    from keras import initializers, layers

    from agebatch.models.layers import CoralLevels, LevelsToBins

    x = layers.Dropout(dropout, name="head_dropout")(features)
    a = layers.Dense(hidden, activation="relu", name="age_hidden")(x)
    if age_head == "bins":
        probs = layers.Dense(len(AGE_BIN_CENTERS), activation="softmax", name="age_bins")(a)
        expect = layers.Dense(1, use_bias=False, trainable=False, name="age")
        age = expect(probs)
        expect.set_weights([AGE_BIN_CENTERS.reshape(-1, 1)])
    elif age_head == "coral":
        score = layers.Dense(1, use_bias=False, name="age_score")(a)
        levels = CoralLevels(len(AGE_BIN_CENTERS) - 1, name="age_levels")(score)
        probs = LevelsToBins(name="age_bins")(levels)
        # The expected value of that distribution: CORAL's sum of P(age > k) whenever the levels are ordered.
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
