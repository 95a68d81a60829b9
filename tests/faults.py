"""Builds a folder of real faces mixed with every kind of bad or awkward input.

Used by the decode tests now and by the inference fault tests later. Each file's
expectation is None (must decode) or a substring of the error reason it must get.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_fault_folder(dst: Path, samples: Path) -> dict[str, str | None]:
    """Fill `dst` and return {path relative to dst: expected error substring or None}."""
    dst.mkdir(parents=True, exist_ok=True)
    faces = sorted(samples.glob("*.jpg"))
    face = faces[0].read_bytes()
    expect: dict[str, str | None] = {}

    def put(name: str, data: bytes, expected: str | None) -> None:
        path = dst / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[name] = expected

    for f in faces[:3]:
        put(f.name, f.read_bytes(), None)
    put("José façade ü.jpg", face, None)  # spaces and non-ASCII letters
    put("sub folder/nested face.jpg", faces[1].read_bytes(), None)
    put("truncated.jpg", face[: len(face) // 2], "truncated JPEG")
    put("truncated_tail.jpg", face[:-2], "truncated JPEG")  # only the end-of-image marker is missing
    put("empty.jpg", b"", "empty file")
    put("notes.jpg", b"These are my notes, not a picture.\n" * 20, "not an image")
    put("garbage.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300), "PNG")

    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    put("gray.jpg", cv2.imencode(".jpg", gray)[1].tobytes(), None)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, : rgb.shape[1] // 2, 3] = 0  # left half fully transparent
    put("alpha.png", cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes(), None)
    deep = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    put("deep16.png", cv2.imencode(".png", deep)[1].tobytes(), None)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    put("cmyk.jpg", buf.getvalue(), None)
    put("face.webp", cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes(), None)
    big = np.zeros((10000, 10000), np.uint8)
    big[::100] = 255
    put("huge.jpg", cv2.imencode(".jpg", big)[1].tobytes(), None)  # decodes at 1/8 scale
    put("huge.png", cv2.imencode(".png", big)[1].tobytes(), "image too large")
    del big

    # Files nobody can read, even root.
    os.symlink("loop.jpg", dst / "loop.jpg")
    expect["loop.jpg"] = "cannot open"
    os.symlink("missing-target.jpg", dst / "broken.jpg")
    expect["broken.jpg"] = "file not found"
    os.mkfifo(dst / "fifo.jpg")
    expect["fifo.jpg"] = "not a regular file"
    # Permission bits stop everyone but root.
    shutil.copyfile(faces[2], dst / "unreadable.jpg")
    os.chmod(dst / "unreadable.jpg", 0)
    expect["unreadable.jpg"] = None if IS_ROOT else "permission denied"
    return expect


def make_bombs(dst: Path) -> dict[str, str]:
    """Real files whose decode would take gigabytes: small on disk, huge in pixels. {name: expected error substring}.

    Run with ``AGEBATCH_DECODE_BUDGET_MIB=256``: the first three declare more than the 64 MP limit in
    their headers; the progressive JPEG (1/8-scale decode, but libjpeg buffers every coefficient of
    the full image: ~288 MB) and the 16-bit RGBA PNG (~290 MB decoded and converted) exceed the budget.
    """
    dst.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def save(name: str, image: Image.Image, fmt: str, expected: str, **kw: object) -> None:
        image.save(dst / name, fmt, **kw)
        expect[name] = expected

    save("bomb.gif", Image.new("L", (9000, 9000), 128), "GIF", "image too large")
    save("bomb.webp", Image.new("RGB", (9000, 9000), (120, 80, 60)), "WEBP", "image too large", lossless=True, method=0)
    save("bomb.tif", Image.new("RGB", (9000, 9000), (120, 80, 60)), "TIFF", "image too large", compression="tiff_deflate")
    save("bomb-progressive.jpg", Image.new("L", (12000, 12000), 128), "JPEG", "too large to decode", progressive=True)
    deep = np.full((4500, 4500, 4), 30000, np.uint16)
    (dst / "bomb16-rgba.png").write_bytes(cv2.imencode(".png", deep)[1].tobytes())
    expect["bomb16-rgba.png"] = "too large to decode"
    return expect
