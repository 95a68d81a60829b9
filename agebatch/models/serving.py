"""The served graph: a trained model, mirror test-time augmentation and the age read-outs.

What a backend runs is built here, once, and saved whole, so Keras, ONNX Runtime and
TensorRT all run exactly the model the card describes:

    image -> [face, mirror] -> trained model -> mean of the two halves -> AgeStats(T)
                                                 age, gender_prob, age_bins    age_std, age_p10, age_p90, age_group

- Mirror TTA: a face and its mirror carry the same age and gender, so averaging the two
  predictions removes part of the model's variance (README "Shipped models": about
  0.1-0.2 years of age MAE). The batch is doubled in one call so an accelerator sees one
  larger batch.
- The one-year age distribution is averaged over the two passes (the distribution level),
  then `AgeStats` reads its spread, 80% interval and Adience group after the calibration
  temperature T stored in the card (`agebatch.models.calibration`). ``age`` stays the expected
  value of the untempered average, so calibrating never moves a point estimate.
- A model without a distribution (the regression head) serves ``age`` and ``gender_prob`` only.

Layers are named ``age_*`` on the age side so the FP16 export keeps them in FP32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from agebatch.models.card import OUTPUT_AGE, OUTPUT_GENDER
from agebatch.models.layers import AgeStats, MeanOfHalves, WeightedSum, WithMirror

#: The trained model's (N, 101) one-year age distribution (both distribution heads name it so).
DISTRIBUTION = "age_bins"
STATS_OUTPUTS = ("age_std", "age_p10", "age_p90", "age_group")


def trained_part(model: Any) -> Any:
    """The trained model inside a served graph (the model itself when it is not wrapped)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if len(nested) == 1 else model


def is_mirrored(model: Any) -> bool:
    return any(isinstance(layer, WithMirror) for layer in model.layers)


def temperature_of(model: Any) -> float | None:
    """The calibration temperature built into a served graph; None when it has no `AgeStats`."""
    stats = [layer for layer in model.layers if isinstance(layer, AgeStats)]
    return stats[0].temperature if stats else None


def has_distribution(model: Any) -> bool:
    return any(layer.name == DISTRIBUTION for layer in trained_part(model).layers)


def _mirror_averaged(trained: Any, outputs: dict[str, Any], mirror: bool) -> tuple[Any, dict[str, Any]]:
    """A fresh ``image`` input fed to `trained`'s `outputs`, averaged over each face and its mirror when `mirror`.

    Returns (the input, the named tensors); the averaging layers are named ``<output>_mirror_mean``
    (``gender_mirror_mean`` for P(female)), so the FP16 export keeps the age ones in FP32.
    """
    inner = keras.Model(trained.inputs, outputs, name=trained.name)
    inp = trained.inputs[0]
    image = keras.Input(inp.shape[1:], dtype=inp.dtype, name="image")
    out = inner(WithMirror(name="mirror")(image) if mirror else image)
    if mirror:
        out = {k: MeanOfHalves(name=f"{'gender' if k == OUTPUT_GENDER else k}_mirror_mean")(v) for k, v in out.items()}
    return image, out


def serving_model(trained: Any, *, mirror: bool = True, temperature: float | None = 1.0) -> Any:
    """Wrap `trained` (uint8 image -> {"age", "gender_prob"}, maybe an "age_bins" layer) for serving.

    ``temperature=None`` leaves the age read-outs out (the distribution, if any, is unused).
    """
    trained = trained_part(trained)
    names = [OUTPUT_AGE, OUTPUT_GENDER]
    with_stats = temperature is not None and has_distribution(trained)
    if with_stats:
        names.append(DISTRIBUTION)
    image, out = _mirror_averaged(trained, {k: trained.get_layer(k).output for k in names}, mirror)
    outputs = {OUTPUT_AGE: out[OUTPUT_AGE], OUTPUT_GENDER: out[OUTPUT_GENDER]}
    if with_stats:
        assert temperature is not None
        stats = AgeStats(temperature, name="age_stats")(out[DISTRIBUTION])
        outputs.update(zip(STATS_OUTPUTS, stats, strict=True))
    return keras.Model(image, outputs, name=trained.name)


def raw_outputs_model(model: Any, *, mirror: bool, names: tuple[str, ...] = (DISTRIBUTION,)) -> Any:
    """uint8 image -> {name: the trained part's (mirror-averaged) output}, e.g. the one-year age
    distribution before any temperature, for calibration and for weighing an ensemble."""
    trained = trained_part(model)
    image, out = _mirror_averaged(trained, {k: trained.get_layer(k).output for k in names}, mirror)
    return keras.Model(image, out)


def ensemble_of(members: Sequence[Any], weights: Sequence[float], *, name: str) -> Any:
    """One trained-part model from several: image -> the `weights`-weighted mean of the members'
    age, P(female) and one-year age distribution.

    The mean of the distributions is the mixture's distribution and the mean of the ages its
    expected value, so `serving_model` wraps an ensemble exactly as it wraps one model (mirror
    TTA, `AgeStats` after a temperature fitted to the mixture). Every member must have an age
    distribution and take the same input.
    """
    names = (OUTPUT_AGE, OUTPUT_GENDER, DISTRIBUTION)
    inners = []
    for i, member in enumerate(members):
        t = trained_part(member)
        inners.append(keras.Model(t.inputs, {k: t.get_layer(k).output for k in names}, name=f"member{i}_{t.name}"))
    inp = inners[0].inputs[0]
    image = keras.Input(inp.shape[1:], dtype=inp.dtype, name="image")
    outs = [inner(image) for inner in inners]
    mixed = {k: WeightedSum(list(weights), name=k)([o[k] for o in outs]) for k in names}
    return keras.Model(image, mixed, name=name)


def with_mirror_tta(model: Any) -> Any:
    """`model` averaged over each face and its mirror (its age read-outs and temperature kept, if it has them)."""
    return serving_model(model, mirror=True, temperature=temperature_of(model))


def without_mirror_tta(model: Any) -> Any:
    """The same served graph with one forward pass per face (its age read-outs and temperature kept, if it has them)."""
    if not is_mirrored(model):
        return model
    return serving_model(model, mirror=False, temperature=temperature_of(model))
