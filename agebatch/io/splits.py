"""`SplitSpec`: which split (train / val / test) a file belongs to, from its content hash alone.

Light on purpose (no pyarrow, no OpenCV): option parsing and `TrainConfig` import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agebatch.errors import AgebatchError


@dataclass(frozen=True, slots=True)
class SplitSpec:
    """Fractions of distinct images for validation and test; the rest is train."""

    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise AgebatchError(f"split fractions must be >= 0 and leave room for train (val={self.val}, test={self.test})")

    def assign(self, sha256: str) -> str:
        """Map a content hash to train/val/test, uniformly and independently of other files."""
        digest = hashlib.sha256(f"{self.seed}:{sha256}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < self.test:
            return "test"
        if u < self.test + self.val:
            return "val"
        return "train"
