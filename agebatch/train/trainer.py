"""`agebatch train custom|pretrained`: one run folder per model, resumable.

Run folder (``runs/NAME/``): ``NAME.keras`` (best weights), ``NAME.card.json``,
``history.csv`` and ``history.parquet``, ``curves.png``, ``checkpoints/`` (last and best
epoch, ``state.json``), ``test_predictions.parquet``.

Model B (EfficientNet-Lite0) keeps the ImageNet blocks below ``train_from_block`` frozen
(BatchNorm in inference mode): their backward pass at high resolution is most of the
cost of a training step on a CPU, while the blocks above see freshly augmented faces
every epoch. With ``feature_cache`` the frozen part's output is instead computed once
per face and per augmented copy and only the upper blocks train on that cache (faster
per epoch, but the few cached views overfit; README "Model B"); the shipped model is
then assembled: frozen lower part + trained upper part, one flat Keras model with
uint8 input.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from typing import Any

import numpy as np

from agebatch.errors import AgebatchError, Terminated, check_stopped, remember_ctrl_c, run_stopped, unfinished
from agebatch.io.decode import DecodeOptions
from agebatch.io.jsonio import read_json, write_json_atomic
from agebatch.io.lock import OutputLock
from agebatch.machine import load_average
from agebatch.models.heads import AGE_BIN_CENTERS, HEAD_LOSS_LAYER
from agebatch.models.pretrained import copy_weights, freeze_lite0_below, split_lite0
from agebatch.train.augment import augment_batch
from agebatch.train.config import TrainConfig
from agebatch.train.data import load_training_data
from agebatch.train.record import save_model, write_run
from agebatch.train.teacher import TeacherTargets, teacher_targets

#: Soft-label width (years) for the age-bin head: neighbouring ages are nearly as right.
AGE_SIGMA = 2.0
#: Weight of the L1 term on the expected age next to the bins' cross-entropy (and of the
#: plain regression L1): it brings years (MAE ~5-10) to the scale of the other losses.
AGE_L1_SCALE = 0.1


def _soft_bins(age: np.ndarray) -> np.ndarray:
    d = AGE_BIN_CENTERS[None, :] - np.clip(age, 0, AGE_BIN_CENTERS[-1])[:, None]
    p = np.exp(-0.5 * (d / AGE_SIGMA) ** 2)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _levels(age: np.ndarray) -> np.ndarray:
    """CORAL targets: 1 where age > k, for thresholds k = 0..99."""
    return (np.clip(age, 0, AGE_BIN_CENTERS[-1])[:, None] > AGE_BIN_CENTERS[None, :-1]).astype(np.float32)


def _targets(
    age: np.ndarray, gender: np.ndarray, age_head: str, teacher: TeacherTargets | None = None, distill: float = 0.0
) -> dict[str, np.ndarray]:
    """The loss targets of one batch; with a teacher, its soft outputs mixed into the distribution and gender targets.

    The L1 target on the expected age stays the label: the teacher informs the shape of the distribution,
    the label anchors its mean.
    """
    g = gender.astype(np.float32)
    if teacher is not None:
        g = (1 - distill) * g + distill * teacher.gender
    t = {"age": age.reshape(-1, 1), "gender_prob": g.reshape(-1, 1)}
    if age_head == "bins":
        t["age_bins"] = _soft_bins(age)
        if teacher is not None:
            t["age_bins"] = (1 - distill) * t["age_bins"] + distill * teacher.bins
    elif age_head == "coral":
        t["age_levels"] = _levels(age)
        if teacher is not None:
            above = 1.0 - np.cumsum(teacher.bins, axis=1)[:, :-1]  # P(age > k) of the teacher's distribution
            t["age_levels"] = (1 - distill) * t["age_levels"] + distill * np.clip(above, 0.0, 1.0)
    return t


def _mixup_pairs(n: int, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mixup's draw for a batch of `n`: each face's weight (from Beta(alpha, alpha), folded to >= 0.5 so a
    blended face stays mostly itself: its augmentation and its row) and its partner's index in the batch."""
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    return np.maximum(lam, 1.0 - lam), rng.permutation(n)


def _mixup(
    images: np.ndarray, targets: dict[str, np.ndarray], lam: np.ndarray, partner: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Blend each face with its partner and every target with the same weight (Zhang et al. 2018).

    The images stay uint8, which is what the model's first layer takes. Every target here is linear in
    the label (ages, soft bins, CORAL levels, P(female)), so blending the targets is blending the labels.
    """
    w = lam[:, None, None, None]
    mixed = np.clip(w * images + (1.0 - w) * images[partner] + 0.5, 0, 255).astype(np.uint8)
    return mixed, {k: lam[:, None] * v + (1.0 - lam[:, None]) * v[partner] for k, v in targets.items()}


def _batches(
    x: np.ndarray,
    age: np.ndarray,
    gender: np.ndarray,
    cfg: TrainConfig,
    *,
    train: bool,
    augment: bool,
    teacher: TeacherTargets | None = None,
) -> Any:
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(cfg.seed)
            self.order = self.rng.permutation(len(x)) if train else np.arange(len(x))

        def __len__(self) -> int:
            return math.ceil(len(x) / cfg.batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            idx = np.sort(self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            xb = x[idx]
            if augment:
                xb = augment_batch(xb, self.rng, cfg.augment)
            soft = None if teacher is None else teacher.take(idx)
            targets = _targets(age[idx], gender[idx], cfg.age_head, soft, cfg.distill)
            if train and augment and cfg.mixup > 0:
                return _mixup(xb, targets, *_mixup_pairs(len(idx), cfg.mixup, self.rng))
            return xb, targets

        def on_epoch_end(self) -> None:
            if train:
                self.order = self.rng.permutation(len(x))

    return Batches()


def _training_model(model: Any, age_head: str) -> Any:
    """The inference model plus the head's own loss output (bin probabilities, CORAL levels) for the loss."""
    import keras

    outputs = {"age": model.get_layer("age").output, "gender_prob": model.get_layer("gender_prob").output}
    extra = HEAD_LOSS_LAYER[age_head]
    if extra is not None:
        outputs[extra] = model.get_layer(extra).output
    return keras.Model(model.inputs, outputs, name=model.name + "_train")


def _compile(model: Any, cfg: TrainConfig) -> None:
    import keras

    losses: dict[str, Any] = {"age": "mae", "gender_prob": "binary_crossentropy"}
    weights = {"age": AGE_L1_SCALE * cfg.age_weight, "gender_prob": cfg.gender_weight}
    if cfg.age_head == "bins":
        losses["age_bins"] = keras.losses.CategoricalCrossentropy()
        weights["age_bins"] = cfg.age_weight
    elif cfg.age_head == "coral":
        # Keras averages the binary cross-entropy over the 100 thresholds; CORAL's loss is their sum.
        losses["age_levels"] = keras.losses.BinaryCrossentropy()
        weights["age_levels"] = cfg.age_weight * (len(AGE_BIN_CENTERS) - 1)
    model.compile(
        optimizer=keras.optimizers.AdamW(cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.weight_decay > 0
        else keras.optimizers.Adam(cfg.lr),
        loss=losses,
        loss_weights=weights,
        metrics={"age": ["mae"], "gender_prob": [_gender_accuracy()]},
    )


def _gender_accuracy() -> Any:
    """Binary accuracy with the target rounded too: a teacher's soft P(female) is still a 0/1 label for the metric.

    Keras' own "binary_accuracy" compares the rounded prediction with the raw target, which a soft
    target never equals. Named the same, so history columns and curves stay as they were.
    """
    import keras
    from keras import ops

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        return ops.mean(ops.cast(ops.equal(y_true > 0.5, y_pred > 0.5), "float32"), axis=-1)

    return keras.metrics.MeanMetricWrapper(accuracy, name="binary_accuracy")


def _lr_at(epoch: int, cfg: TrainConfig) -> float:
    """One warm-up epoch, then cosine decay to 2% of the peak over the planned epochs."""
    if epoch == 0:
        return cfg.lr * 0.3
    t = min(1.0, epoch / max(1, cfg.epochs - 1))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def _run_state_callback(run: str, cfg: TrainConfig, state: dict[str, Any]) -> Any:
    """Checkpoint every epoch, keep the best, stop after `patience` epochs without progress.

    Its state lives in ``checkpoints/state.json`` so that a resumed run continues the
    same patience count and keeps the same best epoch (Keras' EarlyStopping restarts both).
    """
    import keras

    ckpt = os.path.join(run, "checkpoints")

    class RunState(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()
            self.fitted().optimizer.learning_rate.assign(_lr_at(epoch, cfg))

        def fitted(self) -> Any:
            assert self.model is not None, "Keras sets the model before the first epoch"
            return self.model

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            seconds = time.perf_counter() - self.t0
            state["epoch"] = epoch
            state.setdefault("epoch_seconds", []).append(round(seconds, 2))
            value = float(logs.get("val_age_mae", np.inf))
            if value < state.get("best", np.inf):
                state.update(best=value, best_epoch=epoch, wait=0)
                save_model(self.fitted(), os.path.join(ckpt, "best.keras"))
            else:
                state["wait"] = state.get("wait", 0) + 1
            save_model(self.fitted(), os.path.join(ckpt, "last.keras"))
            write_json_atomic(os.path.join(ckpt, "state.json"), state)
            if state["wait"] >= cfg.patience:
                self.fitted().stop_training = True
            check_stopped()  # the epoch is saved; a stop signal whose exception was swallowed stops here

    return RunState()


def _features(bottom: Any, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Frozen lower-block features, stored as float16 to halve the cache."""
    out = [bottom.predict_on_batch(images[i : i + batch]).astype(np.float16) for i in range(0, len(images), batch)]
    return np.concatenate(out)


def _prepare_run(cfg: TrainConfig) -> str:
    run = os.path.join(cfg.out, cfg.run_name)
    ckpt = os.path.join(run, "checkpoints", "last.keras")
    if cfg.resume:
        if not os.path.isfile(ckpt):
            raise AgebatchError(f"nothing to resume: {ckpt} does not exist")
    elif os.path.exists(run):
        if not cfg.overwrite:
            raise unfinished(f"run folder {run}")
        shutil.rmtree(run)
    os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
    return run


def train(cfg: TrainConfig, log: Any = print) -> str:
    """Train one model end to end and return its run folder (locked against a second run on it meanwhile)."""
    if not os.path.exists(cfg.data_path):
        raise AgebatchError(f"no such file or folder: {cfg.data_path}")
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        raise AgebatchError(f"cannot create {cfg.out}: {e.strerror or e}") from e
    with OutputLock(os.path.join(cfg.out, cfg.run_name)):
        return _train(cfg, _prepare_run(cfg), log)


def _train(cfg: TrainConfig, run: str, log: Any) -> str:
    import keras

    keras.utils.set_random_seed(cfg.seed)
    size = (cfg.image_size, cfg.image_size)
    t_start = time.perf_counter()
    data = load_training_data(
        cfg.data_path,
        split=cfg.split,
        options=DecodeOptions(size=size),
        limit=cfg.limit,
        faces=cfg.faces,
        cache_dir=cfg.crop_cache,
        log=log,
    )
    log(f"data: {data.counts}")
    tr, va = data.splits["train"], data.splits["val"]

    lite0 = cfg.kind == "pretrained" and cfg.backbone == "efficientnet-lite0"
    cached = lite0 and cfg.feature_cache and cfg.train_from_block > 0
    model, arch, preprocessing = _build(cfg, size)
    if cfg.init and not cfg.resume:
        log(f"initialised {_init_from(cfg.init, model)} layers from {cfg.init}")
    if lite0 and not cached:
        freeze_lite0_below(model, cfg.train_from_block)
    bottom, top = (None, model)
    if cached:
        bottom, top = split_lite0(
            model,
            first_block=cfg.train_from_block,
            input_size=size,
            age_head=cfg.age_head,
            name=cfg.run_name,
            dropout=cfg.dropout,
        )
    fit_model = top
    n_train = len(tr) * (1 + cfg.aug_copies) if cached else len(tr)

    state: dict[str, Any] = {"load_average_at_start": load_average()}
    initial_epoch = 0
    train_model = _training_model(fit_model, cfg.age_head)
    ckpt_dir = os.path.join(run, "checkpoints")
    if cfg.resume:
        state = read_json(os.path.join(ckpt_dir, "state.json"), missing="checkpoint state.json missing; cannot resume")
        try:
            train_model.load_weights(os.path.join(ckpt_dir, "last.keras"))
        except Exception as e:
            raise AgebatchError(
                f"checkpoint {ckpt_dir}/last.keras does not fit this configuration: {str(e).splitlines()[0]}"
            ) from e
        initial_epoch = int(state["epoch"]) + 1
        log(
            f"resuming after epoch {initial_epoch - 1} "
            f"(best val age MAE {state.get('best'):.3f} at epoch {state.get('best_epoch')})"
        )
    # A resumed run that has nothing left to train only reassembles its best epoch: no feature cache needed.
    need_fit = initial_epoch < cfg.epochs and state.get("wait", 0) < cfg.patience
    if need_fit:
        if cached:
            t0 = time.perf_counter()
            rng = np.random.default_rng(cfg.seed + 1)
            copies = [tr.images] + [augment_batch(tr.images, rng, cfg.augment) for _ in range(cfg.aug_copies)]
            x_tr = np.concatenate([_features(bottom, c) for c in copies])
            y_age, y_gender = np.tile(tr.age, len(copies)), np.tile(tr.gender, len(copies))
            x_va = _features(bottom, va.images)
            seconds = time.perf_counter() - t0
            log(f"feature cache: {len(x_tr):,} train + {len(x_va):,} val in {seconds:.0f} s, {x_tr.nbytes / 2**20:.0f} MiB")
        else:
            x_tr, y_age, y_gender, x_va = tr.images, tr.age, tr.gender, va.images
        soft = None
        if cfg.teacher:
            soft = teacher_targets(cfg.teacher, tr.images, log=log)
            soft = soft.tile(len(x_tr) // len(tr.images)) if cached else soft
        _compile(train_model, cfg)
        train_seq = _batches(x_tr, y_age, y_gender, cfg, train=True, augment=not cached, teacher=soft)
        val_seq = _batches(x_va, va.age, va.gender, cfg, train=False, augment=False)
        callbacks = [
            keras.callbacks.CSVLogger(os.path.join(run, "history.csv"), append=cfg.resume),
            _run_state_callback(run, cfg, state),
        ]
        try:
            with remember_ctrl_c():
                train_model.fit(
                    train_seq,
                    validation_data=val_seq,
                    epochs=cfg.epochs,
                    initial_epoch=initial_epoch,
                    callbacks=callbacks,
                    verbose=2,
                )
        except (KeyboardInterrupt, Terminated) as e:
            done = f"after epoch {state['epoch']}" if "epoch" in state else "before the first epoch ended"
            raise run_stopped(e, f"training stopped {done}; rerun the same command with --resume to continue") from None
    train_model.load_weights(os.path.join(ckpt_dir, "best.keras"))
    if cached:
        copy_weights(fit_model, model)
    from agebatch.models.serving import has_distribution, serving_model

    calibration = None
    if has_distribution(model):
        from agebatch.models.calibration import calibrate

        model, calibration = calibrate(model, va.images, va.age, mirror=cfg.mirror_tta)
        log(f"calibrated: {calibration.summary()}")
    else:
        model = serving_model(model, mirror=cfg.mirror_tta, temperature=None)
    seconds = time.perf_counter() - t_start
    return write_run(
        run, cfg, model, arch, preprocessing, data, state, n_train, seconds, log, calibration and calibration.to_dict()
    )


def _init_from(path: str, model: Any) -> int:
    """Copy the weights of the trained model inside `path` into `model`'s layers of the same name; return how many."""
    from agebatch.backends.keras import load_keras_model
    from agebatch.models.serving import trained_part

    src = trained_part(load_keras_model(path))
    try:
        n = copy_weights(src, model)
    except ValueError as e:
        raise AgebatchError(f"--init {path} does not fit this model: {str(e).splitlines()[0]}") from e
    if n == 0:
        raise AgebatchError(f"--init {path} shares no layer names with this model")
    return n


def _build(cfg: TrainConfig, size: tuple[int, int]) -> tuple[Any, str, str]:
    if cfg.kind == "custom":
        from agebatch.models.custom import ARCHITECTURE, PREPROCESSING, build_custom

        m = build_custom(
            input_size=size,
            stem=cfg.stem,
            widths=cfg.widths,
            depths=cfg.depths,
            age_head=cfg.age_head,
            name=cfg.run_name,
            **cfg.dropout_kwargs(),
        )
        return m, ARCHITECTURE, PREPROCESSING
    from agebatch.models.pretrained import BACKBONES, build_pretrained

    m = build_pretrained(
        backbone=cfg.backbone,
        weights=cfg.weights,
        weights_dir=cfg.weights_dir,
        input_size=size,
        age_head=cfg.age_head,
        name=cfg.run_name,
        **cfg.dropout_kwargs(),
    )
    return m, BACKBONES[cfg.backbone].architecture, BACKBONES[cfg.backbone].preprocessing
