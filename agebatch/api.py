"""One call for Python users: ``agebatch.predict(photos)`` -> an Arrow table, one row per face.

DeepFace and InsightFace users expect a function that takes paths or arrays and returns
results. `predict` is that function, and it is the pipeline itself, not a second one:
it builds an `InferJob` and runs `run_infer` into a temporary folder, so its rows, columns
and error rows are exactly those of ``agebatch infer`` (README "Output"). Arrays are
written as lossless PNGs first, so an array and the same pixels in a file give the same
row. For archives, build an `InferJob` yourself: it streams, resumes and never holds the
whole table in memory, which this convenience does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from agebatch.errors import AgebatchError
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: `InferJob` fields `predict` sets itself (where to read and write, and how a run restarts).
_OWN = {"source", "out", "resume", "overwrite", "summary", "ray", "shard_rows", "shard_seconds", "save_crops"}
_JOB_FIELDS = {f.name for f in fields(InferJob)} - _OWN


def predict(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | np.ndarray] | np.ndarray,
    *,
    bgr: bool = True,
    **options: Any,
) -> pa.Table:
    """Age and gender of every face in `inputs`, as the table ``agebatch infer`` would write.

    `inputs`: a folder, a Parquet manifest or an image file (as the CLI takes them), or
    a list of image paths and/or uint8 arrays (H, W, 3), BGR as OpenCV reads them
    (``bgr=False`` for RGB, as PIL gives), or (H, W) greyscale. One array alone is one
    image. `options` are `InferJob` fields: ``model="modelA"``, ``faces="crop"``,
    ``backend``, ``device``, ``batch_size``, ``tta``, ``face_options``, ``workers``, ...
    Rows keep the order of `inputs`; the `input` column is the position in it. An array's
    `path` is null. A file that cannot be read is an error row, never an exception.

    >>> import agebatch
    >>> table = agebatch.predict(["a.jpg", "b.jpg"])          # doctest: +SKIP
    >>> table.select(["input", "face", "age", "gender"]).to_pandas()  # doctest: +SKIP
    """
    unknown = sorted(set(options) - _JOB_FIELDS)
    if unknown:
        raise AgebatchError(
            f"predict() got unknown options {', '.join(unknown)} (InferJob fields: {', '.join(sorted(_JOB_FIELDS))})"
        )
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="agebatch-predict-") as tmp:
        source, arrays = _source(inputs, tmp, bgr=bgr)
        out = os.path.join(tmp, "predictions.parquet")
        run_infer(InferJob(source, out, summary=os.path.join(tmp, "summary.parquet"), **options))
        table = pq.read_table(out)
    if arrays:
        import pyarrow as pa
        import pyarrow.compute as pc

        # The PNGs written for arrays lived in the temporary folder: their paths mean nothing to the caller.
        is_array = pc.is_in(table.column("input"), value_set=pa.array(sorted(arrays), pa.int64()))
        path = pc.if_else(is_array, pa.scalar(None, pa.string()), table.column("path"))
        table = table.set_column(table.schema.get_field_index("path"), "path", path)
    return table


def _source(inputs: Any, tmp: str, *, bgr: bool) -> tuple[str, set[int]]:
    """A source `run_infer` reads for `inputs`: the path itself, or a manifest of paths and written arrays."""
    import numpy as np

    if isinstance(inputs, (str, os.PathLike)):
        return os.fspath(inputs), set()
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise AgebatchError("predict() got no inputs")
    paths: list[str] = []
    arrays: set[int] = set()
    for k, x in enumerate(inputs):
        if isinstance(x, (str, os.PathLike)):
            paths.append(os.path.abspath(os.fspath(x)))
        elif isinstance(x, np.ndarray):
            paths.append(_write_png(x, os.path.join(tmp, f"array-{k:09d}.png"), k, bgr=bgr))
            arrays.add(k)
        else:
            raise AgebatchError(f"predict() input {k} is a {type(x).__name__}; give a path or a uint8 image array")
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = os.path.join(tmp, "inputs.parquet")
    pq.write_table(pa.table({"path": pa.array(paths, pa.string())}), manifest)
    return manifest, arrays


def _write_png(image: np.ndarray, path: str, k: int, *, bgr: bool) -> str:
    import cv2
    import numpy as np

    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise AgebatchError(
            f"predict() array {k} must be uint8 (H, W), (H, W, 3) or (H, W, 4); got {image.dtype} {tuple(image.shape)}"
        )
    if image.ndim == 3 and not bgr:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(path, image):
        raise AgebatchError(f"predict() could not write array {k} as a temporary PNG in {os.path.dirname(path)}")
    return path


class FacePredictor:
    """A callable for Ray Data's ``map_batches`` (or any batch loop): aligned face crops in, predictions out.

    ``ds.map_batches(FacePredictor, fn_constructor_kwargs={"model": "modelB"}, batch_format="numpy",
    compute=ray.data.ActorPoolStrategy(size=2))``: each actor loads the model once. A batch
    is a dict whose ``image`` column holds uint8 RGB crops at the model's input size
    (`input_size`), aligned like the training faces (``agebatch infer --save-crops`` writes
    such crops; raw photos belong to ``agebatch infer --ray``, which detects and aligns).
    Every other column passes through; the model's outputs are added (`age`,
    `gender_prob`, `age_std`, `age_p10`, `age_p90`, `age_group` as an index into
    `agebatch.ages.AGE_GROUPS`).
    """

    def __init__(self, model: str | None = None, *, backend: str = "auto", device: str = "auto", tta: bool = True) -> None:
        from agebatch.backends.registry import load_backend
        from agebatch.backends.resolve import resolve
        from agebatch.pipeline.stream import runtime_options

        resolved = resolve(model, backend, tta=tta, device=device)
        self.backend = load_backend(resolved.artifact, resolved.backend, **runtime_options(resolved, device))
        self.input_size: tuple[int, int] = tuple(resolved.card.decode_options().size)  # type: ignore[assignment]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        images = np.asarray(batch["image"])
        if images.dtype != np.uint8 or images.shape[1:] != (*self.input_size, 3):
            raise AgebatchError(f"FacePredictor wants uint8 crops of shape (N, {self.input_size[0]}, {self.input_size[1]}, 3); "
                                f"got {images.dtype} {images.shape}")  # fmt: skip
        pred = self.backend.predict(images)
        return {**{k: v for k, v in batch.items() if k != "image"}, **{f.name: getattr(pred, f.name) for f in fields(pred)}}
