"""Estimate the face template: where BlazeFace puts the keypoints in the training crops.

``python -m agebatch.faces.template ../shared/data/utkface`` (``make template``) runs the
detector over the training split's crops (the content-hash split every command uses),
keeps each crop's best face, and stores the per-keypoint median position as fractions
of the crop's size in ``agebatch/faces/utkface_template.json``. The median, not the
mean: a few crops hold a second face or a wrong detection.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from agebatch.faces.align import DEFAULT_TEMPLATE_FILE, FaceTemplate
from agebatch.faces.detect import FaceFinder
from agebatch.faces.stage import FaceStage
from agebatch.io.atomic import AtomicFile
from agebatch.io.decode import DecodeError, load_work_image
from agebatch.io.jsonio import read_json, write_json_atomic
from agebatch.io.manifest import hash_file
from agebatch.io.sources import iter_items
from agebatch.io.splits import SplitSpec


def estimate(source: str, *, limit: int = 4000, split: SplitSpec | None = None, batch: int = 64) -> tuple[FaceTemplate, int]:
    """(template, crops used) from up to `limit` training-split crops of `source`, spread over its listing."""
    split = split or SplitSpec()
    items = list(iter_items(source, labels="none"))
    picks = items[:: max(1, len(items) // (2 * limit))]
    stage = FaceStage("detect")  # decodes photos as inference does (size, pixel and byte limits)
    finder, opts = stage.finder, stage.photo_options
    rel: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    for item in picks:
        sha, _ = hash_file(item.path)
        if sha is None or split.assign(sha) != "train":
            continue
        try:
            chunk.append(load_work_image(item.path, opts)[0])
        except DecodeError:
            continue
        if len(chunk) == batch or len(rel) + len(chunk) >= limit:
            rel += _best(finder, chunk)
            chunk = []
        if len(rel) >= limit:
            break
    rel += _best(finder, chunk)
    if not rel:
        raise SystemExit(f"no face found in the training split of {source}")
    median = np.median(np.stack(rel), axis=0)
    source_note = f"median BlazeFace keypoints over {len(rel):,} training-split crops of {source} (agebatch.faces.template)"
    return FaceTemplate(tuple((round(float(x), 5), round(float(y), 5)) for x, y in median), source_note), len(rel)


def _best(finder: FaceFinder, images: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for image, found in zip(images, finder.find(images), strict=True):
        if len(found):
            best = int(np.argmax(found.scores))
            out.append(found.keypoints[best] / (image.shape[1], image.shape[0]))
    return out


def stamp(folder: str, template: FaceTemplate) -> list[str]:
    """Store `template` in every model card in `folder` and in the card each export's sidecar embeds."""
    done = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith((".card.json", ".onnx.json", ".engine.json")):
            continue
        data = read_json(path, missing=f"{path} vanished")
        card = data.get("card") if "card" in data else data
        card["face_template"] = template.to_dict()
        write_json_atomic(path, data)
        done.append(path)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Estimate the face template from training crops (make template).")
    parser.add_argument("source")
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--out", default=DEFAULT_TEMPLATE_FILE)
    parser.add_argument("--models", default=None, help="also store it in the cards and sidecars in this folder")
    args = parser.parse_args(argv)
    template, n = estimate(args.source, limit=args.limit)
    with AtomicFile(args.out) as out, open(out.tmp, "w", encoding="utf-8") as f:
        json.dump(template.to_dict(), f, indent=2)
        f.write("\n")
    print(f"{args.out}: {n:,} crops; keypoints {template.keypoints}")
    if args.models:
        for path in stamp(args.models, template):
            print(f"{path}: face_template stored")


if __name__ == "__main__":
    main()
