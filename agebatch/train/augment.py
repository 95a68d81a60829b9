"""Augmentation on uint8 batches (NumPy + OpenCV), outside the model graph.

Kept out of the Keras graph on purpose: the exported model must be exactly the
inference model, and random layers would travel into ONNX as dead weight.

Two stages per face: geometry and light (`AugmentConfig`'s first fields), then
**image quality** (`QualityConfig`). The quality stage exists because UTKFace's crops
are soft (median variance of the Laplacian ~92 on the 128-px grey crop) while crops of
modern press photos are ~5x sharper (median ~510): models trained on UTKFace alone read
sharpness and finish as age (a sharpened crop looked ~1 year older, a down/up-sized one
~1 year younger). Each face therefore gets, at random, a sharper *or* a softer copy
(unsharp mask to a drawn sharpness; or a lower effective resolution / Gaussian blur), a JPEG re-encode,
noise, gamma and colour-temperature changes, so that none of them carries age.
"""

from __future__ import annotations

import cv2
import numpy as np

from agebatch.quality import down_up, jpeg, sharpen_to
from agebatch.train.config import AugmentConfig, QualityConfig

#: Interpolations a down-sized copy is made and brought back with: cameras, browsers and
#: archives all resize differently, and each leaves its own blur or ringing.
_INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)


def degrade(img: np.ndarray, rng: np.random.Generator, q: QualityConfig) -> np.ndarray:
    """One face (uint8 RGB) through the quality stage: photometric, sharpness, JPEG, noise."""
    x = img
    do_gamma, do_temperature = rng.random() < q.gamma_p, rng.random() < q.temperature_p
    if do_gamma or do_temperature:
        f = x.astype(np.float32) / 255.0
        if do_gamma:
            f = f ** rng.uniform(*q.gamma)
        if do_temperature:
            g = rng.uniform(-q.temperature, q.temperature)
            f = f * np.array([1 + g, 1.0, 1 - g], np.float32)
        x = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    u = rng.random()
    if u < q.sharpen_p:
        lo, hi = np.log(q.sharpen_to)
        x = sharpen_to(x, float(np.exp(rng.uniform(lo, hi))), rng.uniform(*q.sharpen_sigma))
    elif u < q.sharpen_p + q.resize_p:
        down, up = rng.choice(len(_INTERPOLATIONS), 2)
        x = down_up(x, int(rng.integers(q.resize_px[0], q.resize_px[1] + 1)), _INTERPOLATIONS[down], _INTERPOLATIONS[up])
    elif u < q.sharpen_p + q.resize_p + q.blur_p:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*q.blur_sigma))
    if rng.random() < q.jpeg_p:
        x = jpeg(x, int(rng.integers(q.jpeg_quality[0], q.jpeg_quality[1] + 1)))
    if rng.random() < q.noise_p:
        noise = rng.normal(0.0, rng.uniform(*q.noise_sigma), x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return x


def augment_batch(images: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """Return an augmented copy of a uint8 (N, H, W, 3) batch (`cfg`: the default `AugmentConfig`)."""
    cfg = cfg or AugmentConfig()
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    center = (w / 2, h / 2)
    quality = cfg.quality.enabled
    for i in range(n):
        img = images[i]
        if cfg.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        scale = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
        m = cv2.getRotationMatrix2D(center, angle, scale)
        m[:, 2] += rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
        warped = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        x = warped.astype(np.float32)
        mean = x.mean()
        x = (
            (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
            + mean
            + rng.uniform(-cfg.brightness, cfg.brightness) * 255
        )
        face = np.clip(x, 0, 255).astype(np.uint8)
        out[i] = degrade(face, rng, cfg.quality) if quality else face
    return out
