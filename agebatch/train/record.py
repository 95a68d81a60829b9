"""What a finished training run leaves behind: the model, its card, metrics, history and curves.

Every file goes through `agebatch.io.atomic` (the model too), so an interrupted finish never
leaves a half-written card or model under its final name.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from agebatch.backends.base import Predictions
from agebatch.faces.align import default_template
from agebatch.io.atomic import AtomicFile
from agebatch.io.jsonio import write_json_atomic
from agebatch.machine import machine_facts
from agebatch.metrics import summarize
from agebatch.models.card import ModelCard, card_path, load_card, model_outputs
from agebatch.train.config import TrainConfig
from agebatch.train.data import Split, TrainingData
from agebatch.version import __version__


def _predict(model: Any, images: np.ndarray, batch: int = 256) -> Predictions:
    parts = []
    for i in range(0, len(images), batch):
        out = model.predict_on_batch(images[i : i + batch])
        parts.append(Predictions.from_outputs({k: np.asarray(v) for k, v in out.items()}, len(images[i : i + batch])))
    return Predictions.concat(parts)


def split_metrics(model: Any, split: Split) -> dict[str, Any]:
    """The served model's metrics on one split, per scope (the card's ``metrics.val`` / ``metrics.test``)."""
    p = _predict(model, split.images)
    # A model without a distribution has NaN read-outs, which `summarize` scores as None; the card leaves them out.
    keep = None if p.has_distribution else ("n", "age_mae", "gender_accuracy")
    return {
        r.scope: {k: v for k, v in asdict(r).items() if k != "scope" and (keep is None or k in keep)}
        for r in summarize(p.age, p.gender_prob, split.age, split.gender, p.age_p10, p.age_p90, p.age_group)
    }


def write_run(
    run: str,
    cfg: TrainConfig,
    model: Any,
    arch: str,
    preprocessing: str,
    data: TrainingData,
    state: dict[str, Any],
    n_train: int,
    seconds: float,
    log: Any,
    calibration: dict[str, Any] | None = None,
) -> str:
    """Save the served `model` and everything about the run.

    `calibration` is `agebatch.models.calibration.Calibration.to_dict()`.
    """
    import keras
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = os.path.join(run, f"{cfg.run_name}.keras")
    # A resumed run adds its time to the earlier invocations' (state, or the card of a run from before state kept it).
    if "wall_seconds" not in state and cfg.resume and os.path.isfile(card_path(path)):
        state["wall_seconds"] = load_card(path).training.get("wall_seconds", 0.0)
    state["wall_seconds"] = round(state.get("wall_seconds", 0.0) + seconds, 1)
    write_json_atomic(os.path.join(run, "checkpoints", "state.json"), state)
    save_model(model, path)
    metrics = {"val": split_metrics(model, data.splits["val"]), "test": split_metrics(model, data.splits["test"])}
    epoch_seconds = state.get("epoch_seconds", [])
    versions = {"agebatch": __version__, "keras": keras.__version__, "numpy": np.__version__}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:
        pass
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    card = ModelCard(
        name=cfg.run_name,
        architecture=arch,
        input_size=(cfg.image_size, cfg.image_size),
        preprocessing=preprocessing,
        # Trained on UTKFace's own crops: the template of where the detector finds their keypoints.
        face_template=default_template().to_dict(),
        training={
            "config": config,
            "data_fingerprint": data.fingerprint,
            "counts": data.counts,
            "split": {"method": "sha256(seed:content_sha256)", "seed": cfg.split_seed, "val": cfg.val, "test": cfg.test},
            "epochs_run": int(state.get("epoch", -1)) + 1,
            "best_epoch": state.get("best_epoch"),
            "train_samples_per_epoch": n_train,
            "median_epoch_seconds": float(np.median(epoch_seconds)) if epoch_seconds else None,
            "train_images_per_s": round(n_train / float(np.median(epoch_seconds)), 1) if epoch_seconds else None,
            "wall_seconds": state["wall_seconds"],
            # img/s above were measured here; the load at the start says whether the cores were shared.
            "machine": {**machine_facts(), "load_average_at_start": state.get("load_average_at_start")},
            "test_time_augmentation": "mirror: mean of the face and its left-right mirror" if cfg.mirror_tta else None,
            "params": int(model.count_params()),
        },
        metrics=metrics,
        versions=versions,
        calibration=calibration,
        outputs=model_outputs(calibration is not None),
    )
    card.save(card_path(path))
    hist = os.path.join(run, "history.csv")
    if os.path.isfile(hist):
        with AtomicFile(os.path.join(run, "history.parquet")) as out:
            pq.write_table(pacsv.read_csv(hist), out.tmp)
        plot_history(hist, os.path.join(run, "curves.png"), title=cfg.run_name)
    test = metrics["test"]["all"]
    cover = f", [p10, p90] coverage {test['interval_coverage']:.4f}" if test.get("interval_coverage") is not None else ""
    log(f"test: age MAE {test['age_mae']:.3f}, gender accuracy {test['gender_accuracy']:.4f}{cover}")
    write_json_atomic(os.path.join(run, "metrics.json"), metrics)
    return run


def plot_history(history_csv: str, out_png: str, title: str = "") -> None:
    """Learning curves (loss, age MAE, gender accuracy; train vs val) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.csv as pacsv

    h = pacsv.read_csv(history_csv).to_pydict()
    epochs = [e + 1 for e in h["epoch"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(
        axes, ("loss", "age_mae", "gender_prob_binary_accuracy"), ("loss", "age MAE (years)", "gender accuracy"), strict=True
    ):
        if key in h:
            ax.plot(epochs, h[key], label="train")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], label="val")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with AtomicFile(out_png) as out:
        fig.savefig(out.tmp, dpi=90)
    plt.close(fig)


def save_model(model: Any, path: str) -> None:
    """`model.save` to a temporary .keras name, then rename: a checkpoint is whole or absent."""
    with AtomicFile(path) as out:
        model.save(out.tmp)
