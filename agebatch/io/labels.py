"""Labels encoded in UTKFace-style file names.

UTKFace names look like ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``. A few
real names break the pattern (missing race, a space before ``.jpg``, a missing
dot), so only the leading ``age_gender_`` is required; race is read when present.
A name that does not match has no labels, which is not an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# Race is optional: "39_1_20170116174525125.jpg" has none, and the date that follows
# starts with digits, so race must be a single digit followed by "_".
_UTKFACE = re.compile(r"^(\d{1,3})_([01])_(?:([0-4])_)?")

#: Ages above this are treated as a name that merely looks like UTKFace.
MAX_AGE = 130


@dataclass(frozen=True, slots=True)
class FaceLabels:
    age: int
    gender: int  # 0 = male, 1 = female
    race: int | None


def parse_utkface_name(path: str) -> FaceLabels | None:
    """Return the labels in a UTKFace file name, or None if it carries none."""
    m = _UTKFACE.match(os.path.basename(path))
    if m is None:
        return None
    age = int(m.group(1))
    if age > MAX_AGE:
        return None
    race = m.group(3)
    return FaceLabels(age=age, gender=int(m.group(2)), race=None if race is None else int(race))
