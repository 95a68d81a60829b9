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
  16-bit data scaled properly. OpenCV then applies no EXIF orientation to PNG and WebP,
  so `agebatch.io.headers` reads it and `apply_orientation` turns them upright; TIFF's
  decoder applies its own.
- Every format's header gives the size and pixel layout (`agebatch.io.headers`); a file
  whose header cannot be read is not decoded. Each decode reserves its estimated peak
  memory from one process-wide budget (`BUDGET`, 1 GiB), so decode memory is bounded
  per run, not per worker: more workers wait, they do not add gigabytes.
- A JPEG without an end-of-image marker after its first scan is reported as
  truncated: some OpenCV builds decode such files into half-grey images silently.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from agebatch.errors import AgebatchError
from agebatch.io.headers import HeaderError, ImageHeader, jpeg_frame, read_header
from agebatch.io.sources import Item

Interpolation = Literal["linear", "area", "cubic", "nearest"]
Fit = Literal["stretch", "crop", "pad"]

_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class DecodeError(Exception):
    """One input could not become an image; the message is the reason shown to users."""


#: How a row's `status` is told from its decode reason (`agebatch.io.schemas.STATUSES`): the reasons `read_file`
#: and the size limits below give start with these words; every other decode reason is a "decode_error".
_UNREADABLE = ("no path", "file not found", "permission denied", "is a folder", "cannot open", "not a regular file",
               "read failed", "empty file")  # fmt: skip
_TOO_LARGE = ("file too large", "image too large")


def decode_status(reason: str) -> str:
    """The `status` of a row that failed to decode with `reason`."""
    if reason.startswith(_UNREADABLE):
        return "unreadable"
    return "too_large" if reason.startswith(_TOO_LARGE) else "decode_error"


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
            raise AgebatchError(f"interpolation must be one of {sorted(_INTERPOLATION)}")
        if self.fit not in ("stretch", "crop", "pad"):
            raise AgebatchError("fit must be stretch, crop or pad")
        if min(self.size) < 1 or self.max_pixels < 1 or self.max_bytes < 1:
            raise AgebatchError("decode size, max_pixels and max_bytes must be positive")


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


def _budget_mib() -> int:
    value = os.environ.get("AGEBATCH_DECODE_BUDGET_MIB", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1024


#: Memory that every decode in flight may take together, in this process, whatever the worker count:
#: a decode reserves its estimated peak (`decode_cost`) before it allocates and waits while others hold
#: the budget; a single image whose estimate exceeds it is an error row ("too large to decode").
#: ``$AGEBATCH_DECODE_BUDGET_MIB`` changes it (a small machine, or a test of the bound itself).
DECODE_BUDGET_BYTES = _budget_mib() << 20


class DecodeBudget:
    """A byte budget shared by decode threads (a counting semaphore in bytes)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.capacity:
            raise DecodeError(
                f"image too large to decode (needs ~{nbytes / 2**20:,.0f} MiB; the decode budget is "
                f"{self.capacity / 2**20:,.0f} MiB)"
            )
        with self._cond:
            while self.used + nbytes > self.capacity:
                self._cond.wait()
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


#: The process-wide budget every decode reserves from (tests may swap in a smaller one).
BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)


def jpeg_header(data: bytes) -> tuple[int, int, int]:
    """(height, width, offset of the first scan) of a JPEG (raises DecodeError)."""
    try:
        h, w, _, sos, _ = jpeg_frame(data)
    except HeaderError as e:
        raise DecodeError(str(e)) from None
    return h, w, sos


def _jpeg_scale(h: int, w: int, opts: DecodeOptions) -> int:
    """Largest libjpeg downscale that keeps the short side at or above the target's long side."""
    need = max(opts.size)
    for k in (8, 4, 2):
        if min(h, w) // k >= need:
            return k
    return 1


def decode_cost(header: ImageHeader, scale: int = 1) -> int:
    """Estimated peak bytes of decoding `header`'s image at libjpeg reduction `scale`, until it is BGR uint8.

    JPEG: the (reduced) output, plus for progressive files the coefficient buffer libjpeg
    keeps for the whole image (2 bytes per coefficient and component). Other formats decode
    whole: the decoded array, the codec's own RGBA buffer, and the BGR copy and rotation.
    """
    if header.format == "JPEG":
        out = (header.height // scale) * (header.width // scale) * 3
        return out + (header.pixels * header.channels * 2 if header.progressive else 0)
    decoded = header.pixels * header.channels * header.bytes_per_channel
    return decoded + header.pixels * (4 + 3 + (3 if header.orientation != 1 else 0))


def _check_pixels(h: int, w: int, opts: DecodeOptions, scale: int = 1) -> None:
    pixels = (h // scale) * (w // scale)
    if pixels > opts.max_pixels:
        raise DecodeError(f"image too large ({w}x{h} = {h * w / 1e6:.0f} MP > {opts.max_pixels / 1e6:.0f} MP limit)")


def _imdecode_jpeg(data: bytes, scale: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED.get(scale, cv2.IMREAD_COLOR))
    if img is None:
        raise DecodeError("corrupt JPEG (decoder failed)")
    return img


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
        return _composite_on_white(img)
    raise DecodeError(f"unsupported channel count {channels}")


#: Rows composited at a time: the float32 temporaries of a 64 MP image would otherwise take ~1.5 GB.
_COMPOSITE_ROWS = 256


def _composite_on_white(img: np.ndarray) -> np.ndarray:
    """Grey+alpha or BGRA uint8 -> BGR on white, a band of rows at a time (bounded temporaries)."""
    h, w, channels = img.shape
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, _COMPOSITE_ROWS):
        band = img[y : y + _COMPOSITE_ROWS]
        color = band[..., :1] if channels == 2 else band[..., :3]
        alpha = band[..., -1:].astype(np.float32) * (1 / 255)
        mixed = np.clip(color.astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        out[y : y + _COMPOSITE_ROWS] = np.repeat(mixed, 3, axis=2) if channels == 2 else mixed
    return out


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF `orientation` (1-8; 1: as stored) upright."""
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:  # transpose: mirror across the main diagonal
        return np.ascontiguousarray(np.swapaxes(img, 0, 1))
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # transverse: mirror across the other diagonal
        return np.ascontiguousarray(np.swapaxes(img, 0, 1)[::-1, ::-1])
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


@contextlib.contextmanager
def decoding(data: bytes, opts: DecodeOptions) -> Iterator[tuple[np.ndarray, int]]:
    """Decode to upright BGR uint8 within the shared budget; yield it with libjpeg's reduction (1, 2, 4 or 8).

    The header is read first (size, layout, orientation): a file over `max_pixels`, or whose
    decode would not fit the budget, fails before any pixel is allocated. The budget is held
    while the block runs, so callers resize the image inside it. The reduction factor maps
    decoded pixels back to the source's: boxes are reported in source pixels.
    """
    try:
        header = read_header(data)
    except HeaderError as e:
        raise DecodeError(str(e)) from None
    if header.format == "JPEG":
        if data.find(b"\xff\xd9", header.data_offset) < 0:
            raise DecodeError("truncated JPEG (no end-of-image marker)")
        scale = _jpeg_scale(header.height, header.width, opts)
        _check_pixels(header.height, header.width, opts, scale)
        with BUDGET.reserve(decode_cost(header, scale)):
            yield _imdecode_jpeg(data, scale), scale  # IMREAD_COLOR applies EXIF orientation
        return
    _check_pixels(header.height, header.width, opts)
    with BUDGET.reserve(decode_cost(header)):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DecodeError(f"corrupt or unsupported {header.format} image")
        _check_pixels(img.shape[0], img.shape[1], opts)  # the header's size, as the decoder saw it
        # IMREAD_UNCHANGED applies no EXIF orientation to PNG and WebP (TIFF's decoder applies its own).
        yield apply_orientation(_to_bgr8(img), header.orientation), 1


def decode_bytes(data: bytes, opts: DecodeOptions) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 at native (or JPEG-reduced) size."""
    return decode_scaled(data, opts)[0]


def decode_scaled(data: bytes, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    """`decoding` for callers that keep the whole image (tests, one-off tools): the budget is released on return."""
    with decoding(data, opts) as decoded:
        return decoded


def fit_resize(img: np.ndarray, opts: DecodeOptions, out: np.ndarray, *, rgb: bool = False) -> None:
    """Resize BGR `img` (RGB with `rgb`) into `out` (H, W, 3) as RGB, following `opts.fit`."""
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
        out[y0 : y0 + nh, x0 : x0 + nw] = small if rgb else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        return
    if img.shape[0] != th or img.shape[1] != tw:
        img = cv2.resize(img, (tw, th), interpolation=interp)
    if rgb:
        out[...] = img
        return
    # Convert after resizing: the small image is cheaper to convert than the full one.
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)


def load_image(path: str, opts: DecodeOptions) -> np.ndarray:
    """Read and decode one file to an RGB uint8 array of ``opts.size`` (raises DecodeError)."""
    out = np.empty((*opts.size, 3), np.uint8)
    with decoding(read_file(path, opts.max_bytes), opts) as (bgr, _):
        fit_resize(bgr, opts, out)
    return out


def decode_into(items: Sequence[Item], out: np.ndarray, opts: DecodeOptions) -> list[str | None]:
    """Decode `items` into the rows of `out` (N, H, W, 3); return one error reason or None per item.

    Never raises for a bad input: a failed row is zero-filled and its reason returned.
    """
    errors: list[str | None] = []
    for item, row in zip(items, out, strict=True):
        try:
            with decoding(read_file(item.path, opts.max_bytes), opts) as (bgr, _):
                fit_resize(bgr, opts, row)
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
    with decoding(read_file(path, opts.max_bytes), opts) as (bgr, reduced):
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
