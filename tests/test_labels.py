from __future__ import annotations

import re

import pytest

from agebatch.io.labels import FaceLabels, parse_utkface_name

ODD_NAMES = {
    "24_0_1_20170116220224657 .jpg.chip.jpg": FaceLabels(24, 0, 1),
    "39_1_20170116174525125.jpg.chip.jpg": FaceLabels(39, 1, None),
    "55_0_0_20170116232725357jpg.chip.jpg": FaceLabels(55, 0, 0),
    "61_1_20170109142408075.jpg.chip.jpg": FaceLabels(61, 1, None),
    "61_1_20170109150557335.jpg.chip.jpg": FaceLabels(61, 1, None),
}


@pytest.mark.parametrize(("name", "expected"), ODD_NAMES.items())
def test_the_five_odd_utkface_names_parse(name: str, expected: FaceLabels, samples_dir) -> None:
    assert (samples_dir / name).is_file(), "the odd names ship with the samples"
    assert parse_utkface_name(str(samples_dir / name)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1_0_4_20170103205843434.jpg.chip.jpg", FaceLabels(1, 0, 4)),
        ("/some/dir/116_1_2_x.jpg", FaceLabels(116, 1, 2)),
        ("holiday.jpg", None),
        ("23_2_0_x.jpg", None),  # gender must be 0 or 1
        ("x_23_0_0.jpg", None),
        ("999_0_0_x.jpg", None),  # not a plausible age
        ("7_1_.jpg", FaceLabels(7, 1, None)),
    ],
)
def test_parse_rules(name: str, expected: FaceLabels | None) -> None:
    assert parse_utkface_name(name) == expected


@pytest.mark.pool
def test_every_pool_name_parses_like_the_documented_prefix(pool_dir) -> None:
    # Independent reference: the leading ^(\d+)_([01])_ that PROVENANCE documents.
    ref = re.compile(r"^(\d+)_([01])_")
    names = [p.name for p in pool_dir.iterdir()]
    assert len(names) == 20195
    for name in names:
        m = ref.match(name)
        got = parse_utkface_name(name)
        assert m is not None and got is not None, name
        assert (got.age, got.gender) == (int(m[1]), int(m[2])), name
