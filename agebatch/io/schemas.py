"""The Parquet contracts agebatch writes: one place for every column and metadata key.

These are public: the README documents them and tests pin them. Add columns at the
end and bump `SCHEMA_VERSION`; never change a column's meaning in place.
"""

from __future__ import annotations

import pyarrow as pa

#: 2: predictions' `path` may be null (a manifest row without a path); with --faces detect, one row per face
#: and the FACE_COLUMNS. 3: the AGE_DISTRIBUTION_COLUMNS after `error`.
#: 4: `path_bytes` last (the exact bytes of a file name that is not valid UTF-8; `path` then has U+FFFD for them).
#: 5: `face_keypoints`, `face_visible` end the FACE_COLUMNS; `input` and `status` after the label columns, then the
#: manifest's passed-through columns, then `path_bytes`.
SCHEMA_VERSION = "5"

#: Key/value metadata keys (bytes in Parquet; str here). Writers fill what they know.
META_VERSION = "agebatch.version"  # tool version that wrote the file
META_SCHEMA = "agebatch.schema"  # "manifest" | "predictions" | "summary"
META_SCHEMA_VERSION = "agebatch.schema_version"
META_CREATED = "agebatch.created"  # UTC ISO-8601, when the writer opened the file
META_SOURCE = "agebatch.source"  # the input folder/manifest as given
META_MODEL_ID = "agebatch.model_id"
META_MODEL_SHA256 = "agebatch.model_sha256"
META_BACKEND = "agebatch.backend"
META_PRECISION = "agebatch.precision"
META_ROWS = "agebatch.rows"  # rows written, stored when the file is completed
META_STATS = "agebatch.stats"  # JSON object of run statistics, stored on completion
META_INPUTS = "agebatch.inputs"  # inputs a shard covers (rows can be more: one per face)
META_FACES = "agebatch.faces"  # "crop" or "detect"
META_RUN = "agebatch.run_signature"  # JSON: source, model sha256, labels, decode and face settings (resume compares it)
META_SHARD = "agebatch.shard"  # JSON, in each shard's footer: first input, inputs, sha256 of their keys

SPLITS = ("train", "val", "test")

#: Always last: null unless the input's file name is not valid UTF-8; then its exact bytes (`path` shows them as U+FFFD).
PATH_BYTES = pa.field("path_bytes", pa.binary())

MANIFEST = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("age", pa.int16()),
        pa.field("gender", pa.int8()),  # 0 male, 1 female
        pa.field("race", pa.int8()),
        pa.field("sha256", pa.string()),  # null when the file could not be read
        pa.field("bytes", pa.int64()),
        pa.field("split", pa.dictionary(pa.int8(), pa.string())),
        PATH_BYTES,  # schema 4: set only when the file name is not valid UTF-8 (`path` then shows U+FFFD)
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field("path", pa.string()),  # the input as listed; null only for a manifest row without a path
        pa.field("age", pa.float32()),  # years; null on error
        pa.field("gender_prob", pa.float32()),  # P(female); null on error
        pa.field("gender", pa.int8()),  # 0 male, 1 female; null on error
        pa.field("error", pa.string()),  # null when the row is fine
    ]
)

#: Always after PREDICTIONS: read off the model's age distribution (`agebatch.ages`, calibrated on the validation
#: split); null on error and for a model without an age distribution (the regression head).
AGE_DISTRIBUTION_COLUMNS = [
    pa.field("age_std", pa.float32()),  # spread of the predicted age distribution, years
    pa.field("age_p10", pa.float32()),  # 80% interval: the true age lies in [age_p10, age_p90] for 80% of faces
    pa.field("age_p90", pa.float32()),
    pa.field("age_group", pa.string()),  # most probable Adience group: 0-2, 4-6, 8-13, 15-20, 25-32, 38-43, 48-53, 60+
]

#: Appended to PREDICTIONS with --faces detect: which face of the image, where, how sure the detector was.
FACE_COLUMNS = [
    pa.field("face", pa.int16()),  # 0 = the largest face of the image, then by size; null when none was found
    pa.field("face_x", pa.float32()),  # box in source-image pixels (after EXIF rotation); may reach past the image
    pa.field("face_y", pa.float32()),
    pa.field("face_w", pa.float32()),
    pa.field("face_h", pa.float32()),
    pa.field("face_score", pa.float32()),  # detector confidence, 0..1
    # Schema 5: right eye, left eye, nose tip, mouth as x0, y0, ..., x3, y3 in source pixels (InsightFace's `kps`
    # order differs: it has two mouth corners); the share of the aligned crop that lies inside the photo (< 1 for a
    # face cut by the frame, whose box then reaches past the image).
    pa.field("face_keypoints", pa.list_(pa.float32(), 8)),
    pa.field("face_visible", pa.float32()),
]

#: Appended when the inputs carry labels.
PREDICTION_LABELS = [pa.field("age_true", pa.int16()), pa.field("gender_true", pa.int8())]

#: What became of a row, one word (`error` keeps the readable reason). Only "ok" rows carry predictions;
#: "no_face" is an outcome, not a failure (a landscape has no face), and is counted apart from errors.
STATUSES: dict[str, str] = {
    "ok": "predicted",
    "no_face": "detect mode: no face found, or only faces smaller than --min-face",
    "unreadable": "the file could not be read: missing, a folder, not a regular file, empty, no permission, no path",
    "too_large": "over a size limit: file bytes, decoded pixels, or the decode memory budget",
    "decode_error": "the bytes are not a decodable image (corrupt, truncated, unsupported format or pixel type)",
    "bad_box": "the manifest's face box has no positive size, lies outside the image, or has malformed keypoints",
}
#: Statuses that are not failures of the run's inputs (the progress bar, tally and summary count the rest as errors).
NOT_ERRORS = ("ok", "no_face")

#: Schema 5, always after the label columns: which input a row belongs to and what became of it.
ROW_COLUMNS = [
    pa.field("input", pa.int64(), nullable=False),  # 0-based position in the source (manifest row, folder listing)
    pa.field("status", pa.string(), nullable=False),  # one of STATUSES
]
SUMMARY = pa.schema(
    [
        pa.field("scope", pa.string(), nullable=False),  # all | age:0-12 | ... | gender:male | gender:female
        pa.field("n", pa.int64()),
        pa.field("age_mae", pa.float64()),
        pa.field("gender_accuracy", pa.float64()),
        # Schema 3, null without an age distribution: share of true ages in [age_p10, age_p90]; Adience group accuracy.
        pa.field("age_interval_coverage", pa.float64()),
        pa.field("age_group_exact", pa.float64()),
        pa.field("age_group_one_off", pa.float64()),
        # Schema 4, `evaluate`'s quality rows (agebatch.quality): scopes quality:down-up-2x / quality:sharpened carry
        # the mean signed and mean absolute age change against the original crop; sharpness:q1..q5 (softest to
        # sharpest fifth of the crops) carry age_mae, age_bias (mean signed error) and their median sharpness.
        pa.field("age_shift", pa.float64()),
        pa.field("age_change", pa.float64()),
        pa.field("age_bias", pa.float64()),
        pa.field("sharpness", pa.float64()),
    ]
)


def predictions_schema(labels: bool, faces: bool = False, passthrough: list[pa.Field] | None = None) -> pa.Schema:
    """The predictions table's schema: face columns with --faces detect, label columns when inputs carry labels,
    then `input` and `status`, then the manifest's `passthrough` columns (`--keep-columns`), `path_bytes` last."""
    return pa.schema(
        list(PREDICTIONS)
        + AGE_DISTRIBUTION_COLUMNS
        + (FACE_COLUMNS if faces else [])
        + (PREDICTION_LABELS if labels else [])
        + ROW_COLUMNS
        + (passthrough or [])
        + [PATH_BYTES]
    )


def output_names() -> set[str]:
    """Every column name agebatch itself may write to a predictions table (a passed-through column must not clash)."""
    return set(predictions_schema(True, True).names)
