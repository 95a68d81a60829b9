"""`agebatch calibrate`: fit a saved model's 80% age interval on the validation split, in place.

The maths lives in `agebatch.models.calibration` (training uses it too); this module only
loads the model and the split's faces and rewrites the model and its card.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from agebatch.io.splits import SplitSpec
from agebatch.models.calibration import Calibration, calibrate
from agebatch.models.card import card_path


def calibrate_file(
    model_path: str,
    data: str,
    *,
    split: SplitSpec | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], object] = print,
) -> Calibration:
    """Calibrate the model at `model_path` on the validation split of `data` and rewrite it and its card in place.

    For a model trained before calibration existed, or after a new validation split. The
    card's val/test metrics are recomputed with the served model (intervals included);
    ONNX and TensorRT exports must be rebuilt from it (`agebatch build-engine`).
    """
    from agebatch.backends.keras import load_keras_model
    from agebatch.errors import AgebatchError
    from agebatch.faces.align import template_for
    from agebatch.io.lock import OutputLock
    from agebatch.models.card import load_card, model_outputs
    from agebatch.models.serving import has_distribution, is_mirrored
    from agebatch.train.data import load_training_data
    from agebatch.train.record import save_model, split_metrics

    card = load_card(model_path)
    model = load_keras_model(model_path)
    if not has_distribution(model):
        raise AgebatchError(f"{model_path} has no age distribution to calibrate (its age head is a plain regression)")
    with OutputLock(os.path.splitext(model_path)[0]):
        data_ = load_training_data(
            data,
            split=split or SplitSpec(),
            options=card.decode_options(),
            template=template_for(card.face_template),
            cache_dir=cache_dir,
            log=log,
        )
        va = data_.splits["val"]
        served, cal = calibrate(model, va.images, va.age, mirror=is_mirrored(model))
        card.calibration = cal.to_dict()
        card.outputs = model_outputs(True)
        card.metrics = {"val": split_metrics(served, va), "test": split_metrics(served, data_.splits["test"])}
        save_model(served, model_path)
        card.save(card_path(model_path))
    return cal
