"""The seeds' evaluation loop, reproduced as the baseline for `agebatch bench infer`.

What the coursework seeds do: ``cv2.imread`` each file, resize, divide by 255, stack
every image into one float64 array, then one ``model.predict``. Our models take uint8
pixels (their preprocessing is in the graph), so the stacked array is scaled back to
uint8 right before ``predict``; everything else, including the float64 array that
grows with the input, is as the seeds have it.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("model")
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    import cv2
    import numpy as np

    from agebatch.backends.keras import KerasBackend

    backend = KerasBackend(a.model)
    h, w = backend.input_size
    names = sorted(os.listdir(a.folder))[: a.limit]
    images = []
    for name in names:
        img = cv2.imread(os.path.join(a.folder, name))
        if img is None:
            continue
        img = cv2.cvtColor(cv2.resize(img, (w, h)), cv2.COLOR_BGR2RGB)
        images.append(img / 255.0)
    x = np.array(images)
    out = backend.model.predict((x * 255).round().astype(np.uint8), batch_size=32, verbose=0)  # type: ignore[attr-defined]
    print(len(out["age"]), file=sys.stderr)


if __name__ == "__main__":
    main()
