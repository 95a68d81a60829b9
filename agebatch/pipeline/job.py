"""An inference job: every option of one run in one frozen, validated object.

The CLI, `evaluate`, `bench` and the Ray path all build an `InferJob`, so an option has
one name, one default and one check, wherever a run comes from. Library users build
it directly: ``run_infer(InferJob("photos/", "preds.parquet", batch_size=128))``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agebatch.backends.base import DEVICES
from agebatch.backends.registry import BACKEND_CHOICES
from agebatch.errors import AgebatchError
from agebatch.faces.options import DEFAULT_FACES, FACE_MODES, FaceOptions

#: A resumable shard is written at this many rows or this many seconds, whichever comes first, so a crash
#: (kill -9) loses at most that much work; Ctrl-C and SIGTERM lose only the batch in flight.
DEFAULT_SHARD_ROWS = 8192
DEFAULT_SHARD_SECONDS = 30.0
DEFAULT_BATCH_SIZE = 256
#: The decode queue holds up to 4 batches: 4,096 faces at 128x128 are 0.8 GB of pixels in flight.
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where and how wide a Ray run goes (`agebatch infer --ray`)."""

    address: str | None = None  # None: a local instance; "auto" or "ray://host:port": an existing cluster
    actors: int = 1  # prediction actors (model copies)
    gpus_per_actor: float = 0.0
    num_cpus: int | None = None  # for a local instance only

    def __post_init__(self) -> None:
        if self.actors < 1 or self.gpus_per_actor < 0 or (self.num_cpus is not None and self.num_cpus < 1):
            raise AgebatchError("Ray needs at least one actor, a non-negative GPU share and at least one CPU")


@dataclass(frozen=True, slots=True)
class InferJob:
    """What `agebatch infer` does: read `source`, predict with `model`, write `out`.

    With `ray`, decode and prediction run on a Ray cluster and `out` is a folder of shards.
    """

    source: str
    out: str
    model: str | None = None  # None: the shipped default model
    backend: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None  # decode threads; None: one per CPU, 0: decode in the calling thread
    resume: bool = False
    overwrite: bool = False
    summary: str | None = None  # None: <out stem>.summary.parquet, written when labels are known
    limit: int | None = None
    glob: str | None = None
    shard_rows: int = DEFAULT_SHARD_ROWS
    shard_seconds: float = DEFAULT_SHARD_SECONDS
    #: Manifest columns copied to each output row (`io.sources.passthrough_fields`); None: all the output does not use.
    keep_columns: tuple[str, ...] | None = None
    ray: RayOptions | None = None
    faces: str = DEFAULT_FACES  # "detect": find, align and predict every face; "crop": each input is one face crop
    face_options: FaceOptions = field(default_factory=FaceOptions)
    save_crops: str | None = None  # folder for each aligned face as JPEG (detect mode)
    tta: bool = True  # a mirror-TTA model averages each face with its mirror; False: one pass (about 2x faster)
    device: str = "auto"  # ONNX Runtime: "cpu", "cuda" (CUDA execution provider), "auto" (CUDA when present)

    def __post_init__(self) -> None:
        if not self.source or not self.out:
            raise AgebatchError("a job needs a source and an output")
        if self.backend not in BACKEND_CHOICES:
            raise AgebatchError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise AgebatchError(
                f"batch size must be 1..{MAX_BATCH_SIZE:,} (got {self.batch_size:,}): the decode queue holds up to 4 batches "
                "of pixels, and bigger batches stop helping long before that"
            )
        if self.resume and self.overwrite:
            raise AgebatchError("--resume continues a run and --overwrite starts it over: pass one of them")
        if self.shard_rows < 1:
            raise AgebatchError("shard rows must be positive")
        if not self.shard_seconds > 0:
            raise AgebatchError("shard seconds must be positive")
        if self.workers is not None and self.workers < 0:
            raise AgebatchError("workers must be 0 or more")
        if self.limit is not None and self.limit < 1:
            raise AgebatchError("limit must be at least 1")
        if self.faces not in FACE_MODES:
            raise AgebatchError(f"--faces must be one of {', '.join(FACE_MODES)} (got {self.faces!r})")
        if self.device not in DEVICES:
            raise AgebatchError(f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if self.save_crops is not None and self.faces != "detect":
            raise AgebatchError("--save-crops needs --faces detect (crop mode feeds each input as it is)")

    @property
    def folder_output(self) -> bool:
        """Ray runs write a folder of shards; local runs one Parquet file."""
        return self.ray is not None

    @property
    def summary_path(self) -> str:
        if self.summary:
            return self.summary
        out = self.out.rstrip("/" + os.sep)
        root = out[: -len(".parquet")] if out.endswith(".parquet") else out
        return root + ".summary.parquet"

    def cli_args(self) -> list[str]:
        """The `agebatch infer` arguments that run this job (benchmarks time it as a whole process)."""
        args = [self.source, "--out", self.out, "--backend", self.backend, "--batch-size", str(self.batch_size)]
        args += ["--shard-rows", str(self.shard_rows), "--shard-seconds", str(self.shard_seconds)]
        if self.keep_columns is not None:
            args += ["--keep-columns", ",".join(self.keep_columns)]
        for flag, value in (("--model", self.model), ("--workers", self.workers), ("--summary", self.summary)):
            if value is not None:
                args += [flag, str(value)]
        for flag, value in (("--limit", self.limit), ("--glob", self.glob)):
            if value is not None:
                args += [flag, str(value)]
        args += [flag for flag, on in (("--resume", self.resume), ("--overwrite", self.overwrite)) if on]
        f = self.face_options
        args += ["--faces", self.faces, "--min-score", str(f.min_score), "--min-face", str(f.min_face)]
        if f.max_faces is not None:
            args += ["--max-faces", str(f.max_faces)]
        args += ["--tiles" if f.tiles else "--no-tiles", "--edge-faces" if f.edges else "--no-edge-faces"]
        if self.save_crops is not None:
            args += ["--save-crops", self.save_crops]
        args += ["--tta" if self.tta else "--no-tta", "--device", self.device]
        if self.ray is not None:
            args += ["--ray", self.ray.address or "local", "--actors", str(self.ray.actors)]
            args += ["--gpus-per-actor", str(self.ray.gpus_per_actor)]
        return args
