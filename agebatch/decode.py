"""Bytes on disk -> RGB uint8 at the model's input size. The only code that touches pixels.

Training and inference both call `decode_into`, so a face looks the same to the model
in both. Every failure becomes a short readable reason (`DecodeError`); callers turn it
into an error row and carry on. Guards run before decoding wherever the header tells
the size, so a decompression bomb costs a few bytes of parsing, not gigabytes.

Choices worth knowing:
- JPEGs decode with ``IMREAD_COLOR`` (OpenCV applies EXIF orientation and converts
  grayscale and CMYK), and with libjpeg's DCT-domain downscaling (``IMREAD_REDUCED_*``)
  when the image is at least twice the target size: a 10000x10000 JPEG decodes at
  1/8 scale, fast and in 1/64 of the memory.
- Other formats decode with ``IMREAD_UNCHANGED`` so alpha can be composited on white
  (dropping it would expose whatever colour transparent pixels happen to store) and
  16-bit data scaled properly. OpenCV applies no EXIF orientation to them.
- A JPEG without an end-of-image marker after its first scan is reported as
  truncated: some OpenCV builds decode such files into half-grey images silently.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from agebatch.sources import Item

Interpolation = Literal["linear", "area", "cubic", "nearest"]
Fit = Literal["stretch", "crop", "pad"]

_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# JPEG start-of-frame markers carry the image size (C4 DHT, C8 JPG, CC DAC are not frames).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class DecodeError(Exception):
    """One input could not become an image; the message is the reason shown to users."""


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How every input is turned into a model input. Models record theirs in the model card."""

    size: tuple[int, int] = (128, 128)  # (height, width)
    interpolation: Interpolation = "linear"
    fit: Fit = "stretch"  # stretch to size | center-crop to its aspect | pad (letterbox, black)
    max_pixels: int = 64_000_000  # after any JPEG downscaling; bounds memory per worker
    max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}")
        if self.fit not in ("stretch", "crop", "pad"):
            raise ValueError("fit must be stretch, crop or pad")
        if min(self.size) < 1:
            raise ValueError("size must be positive")


def read_file(path: str, max_bytes: int) -> bytes:
    """Read a whole regular file, turning every OS failure into a readable reason."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if not path:
        raise DecodeError("no path (null or empty in the manifest)")
    try:
        # O_NONBLOCK: opening a FIFO named like an image must not hang the worker.
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:
        raise DecodeError("is a folder, not a file") from None
    except OSError as e:
        raise DecodeError(f"cannot open: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DecodeError("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not a regular file")
        raise DecodeError(f"file too large ({st.st_size / 2**20:.0f} MiB > {max_bytes / 2**20:.0f} MiB limit)")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read()
        except OSError as e:
            raise DecodeError(f"read failed: {e.strerror or e}") from None
    if not data:
        raise DecodeError("empty file (0 bytes)")
    return data


def sniff_format(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def jpeg_header(data: bytes) -> tuple[int, int, int]:
    """Return (height, width, offset of the first scan) by walking the JPEG marker segments.

    Walking segments (not searching bytes) skips EXIF thumbnails, which are complete
    JPEGs with their own end markers inside the APP1 segment.
    """
    i, n = 2, len(data)
    height = width = -1
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise DecodeError("corrupt JPEG (bad marker in header)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            raise DecodeError("corrupt JPEG (ends before any image data)")
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            if width < 0:
                raise DecodeError("corrupt JPEG (no frame header)")
            return height, width, i
        if marker in _SOF_MARKERS and i + 9 <= n:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
        i += 2 + seglen
    raise DecodeError("truncated JPEG (header incomplete)")


def _check_pixels(h: int, w: int, opts: DecodeOptions, scale: int = 1) -> None:
    pixels = (h // scale) * (w // scale)
    if pixels > opts.max_pixels:
        raise DecodeError(f"image too large ({w}x{h} = {h * w / 1e6:.0f} MP > {opts.max_pixels / 1e6:.0f} MP limit)")


def _decode_jpeg(data: bytes, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    h, w, sos = jpeg_header(data)
    if data.find(b"\xff\xd9", sos) < 0:
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    # Largest libjpeg downscale that keeps the short side at or above the target's long side.
    need = max(opts.size)
    scale = 1
    if h > 0:
        for k in (8, 4, 2):
            if min(h, w) // k >= need:
                scale = k
                break
        _check_pixels(h, w, opts, scale)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED.get(scale, cv2.IMREAD_COLOR))
    if img is None:
        raise DecodeError("corrupt JPEG (decoder failed)")
    return img, scale


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """Normalise what IMREAD_UNCHANGED returns to 3-channel uint8 BGR."""
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1 / 257)  # 65535 -> 255, rounded
    elif img.dtype != np.uint8:
        raise DecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 3:
        return img
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels in (2, 4):
        color = img[..., :1] if channels == 2 else img[..., :3]
        alpha = img[..., -1:].astype(np.float32) * (1 / 255)
        out = color.astype(np.float32) * alpha + 255.0 * (1.0 - alpha)  # composite on white
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR) if channels == 2 else out
    raise DecodeError(f"unsupported channel count {channels}")


def decode_bytes(data: bytes, opts: DecodeOptions) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 at native (or JPEG-reduced) size."""
    return decode_scaled(data, opts)[0]


def decode_scaled(data: bytes, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    """Decode to BGR uint8; also return libjpeg's reduction factor (1, 2, 4 or 8; 1 for other formats).

    The factor maps decoded pixels back to the source's: face boxes are reported in the
    source image's pixels even when the photo was decoded at 1/8 of its size.
    """
    fmt = sniff_format(data)
    if fmt == "JPEG":
        return _decode_jpeg(data, opts)
    if fmt == "PNG":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise DecodeError("corrupt PNG (no image header)")
        _check_pixels(int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"), opts)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        if fmt is None:
            raise DecodeError("not an image (unrecognised file format)")
        raise DecodeError(f"corrupt or unsupported {fmt} image")
    _check_pixels(img.shape[0], img.shape[1], opts)
    return _to_bgr8(img), 1


def fit_resize(img: np.ndarray, opts: DecodeOptions, out: np.ndarray) -> None:
    """Resize BGR `img` into `out` (H, W, 3) as RGB, following `opts.fit`."""
    th, tw = opts.size
    interp = _INTERPOLATION[opts.interpolation]
    h, w = img.shape[:2]
    if opts.fit == "crop" and h * tw != w * th:
        if w * th > h * tw:  # too wide
            cw = max(1, round(h * tw / th))
            x0 = (w - cw) // 2
            img = img[:, x0 : x0 + cw]
        else:
            ch = max(1, round(w * th / tw))
            y0 = (h - ch) // 2
            img = img[y0 : y0 + ch]
    if opts.fit == "pad" and h * tw != w * th:
        s = min(th / h, tw / w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        small = cv2.resize(img, (nw, nh), interpolation=interp)
        out[...] = 0
        y0, x0 = (th - nh) // 2, (tw - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        return
    if img.shape[0] != th or img.shape[1] != tw:
        img = cv2.resize(img, (tw, th), interpolation=interp)
    # Convert after resizing: the small image is cheaper to convert than the full one.
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)


def load_image(path: str, opts: DecodeOptions) -> np.ndarray:
    """Read and decode one file to an RGB uint8 array of ``opts.size`` (raises DecodeError)."""
    out = np.empty((*opts.size, 3), np.uint8)
    fit_resize(decode_bytes(read_file(path, opts.max_bytes), opts), opts, out)
    return out


def decode_into(items: Sequence[Item], out: np.ndarray, opts: DecodeOptions) -> list[str | None]:
    """Decode `items` into the rows of `out` (N, H, W, 3); return one error reason or None per item.

    Never raises for a bad input: a failed row is zero-filled and its reason returned.
    """
    errors: list[str | None] = []
    for item, row in zip(items, out, strict=True):
        try:
            fit_resize(decode_bytes(read_file(item.path, opts.max_bytes), opts), opts, row)
            errors.append(None)
        except DECODE_FAILURES as e:
            row[...] = 0
            errors.append(failure_reason(e))
    return errors


#: What decoding one bad file can raise; each becomes that file's error row, never a crash.
DECODE_FAILURES = (DecodeError, cv2.error, MemoryError, ValueError, OSError)


def failure_reason(e: BaseException) -> str:
    """One readable line for a failed decode."""
    if isinstance(e, DecodeError):
        return str(e)
    # OpenCV errors are multi-line C++ traces; their last line holds the reason.
    detail = str(e).strip().splitlines()
    return f"decode failed: {type(e).__name__}" + (f": {detail[-1]}" if detail else "")


def decode_work_images(items: Sequence[Item], opts: DecodeOptions) -> list[tuple[np.ndarray | None, float, str | None]]:
    """`load_work_image` for each item: (RGB image or None, source pixels per image pixel, error reason or None)."""
    out: list[tuple[np.ndarray | None, float, str | None]] = []
    for item in items:
        try:
            image, scale = load_work_image(item.path, opts)
            out.append((image, scale, None))
        except DECODE_FAILURES as e:
            out.append((None, 1.0, failure_reason(e)))
    return out


def load_work_image(path: str, opts: DecodeOptions) -> tuple[np.ndarray, float]:
    """Read one file as RGB uint8 with its long side at most ``max(opts.size)``; and source pixels per pixel.

    For face detection: the photo is decoded at the smallest libjpeg reduction that keeps
    its short side at or above the target, then shrunk (area) so the long side fits, so a
    12 MP JPEG costs a 1/2 or 1/4 decode and at most ``target`` squared pixels of memory.
    Raises DecodeError.
    """
    bgr, reduced = decode_scaled(read_file(path, opts.max_bytes), opts)
    h, w = bgr.shape[:2]
    side = max(opts.size)
    scale = float(reduced)
    if max(h, w) > side:
        f = side / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        scale = reduced * max(h, w) / side
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), scale


def limit_opencv_threads() -> None:
    """Give OpenCV one internal thread: our workers parallelise across images instead.

    Without this, N decode workers each fan out into OpenCV's own pool of N threads
    (N x N threads on N cores). Measured here on 2 cores with warm cache, the gain is
    small (one thread: 5,340 -> 5,560 img/s; 2 workers: 7,200-7,800 -> 7,800-7,900),
    but it makes per-worker cost predictable. The setting is process-wide.
    """
    cv2.setNumThreads(1)
