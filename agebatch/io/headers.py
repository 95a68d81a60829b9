"""Image headers: format, size, pixel layout and EXIF orientation, read from a few bytes.

Every format agebatch decodes is read here first, so the decoder knows what a file
will cost before it allocates a pixel (a 300 KB GIF or WebP can declare a 4-gigapixel
canvas). A format whose header this module cannot read is not decoded at all: its
size could not be bounded. Pure byte parsing, no OpenCV.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class HeaderError(ValueError):
    """The header is missing or malformed; the message is the reason shown to users."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str  # JPEG | PNG | GIF | BMP | TIFF | WEBP
    height: int
    width: int
    channels: int  # as the decoder returns them before conversion to BGR
    bytes_per_channel: int = 1
    progressive: bool = False  # JPEG: libjpeg then holds every DCT coefficient of the full image
    orientation: int = 1  # EXIF orientation (1 = as stored), where this module reads it (PNG, WebP)
    data_offset: int = 0  # JPEG: where the first scan starts (the end-of-image marker is searched after it)

    @property
    def pixels(self) -> int:
        return self.height * self.width


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Progressive (and lossless-hierarchical) frames: libjpeg buffers the whole coefficient image.
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels as decoded (palette -> BGR)


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"GIF8"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def read_header(data: bytes) -> ImageHeader:
    """The header of an encoded image (raises HeaderError)."""
    fmt = sniff_format(data)
    if fmt is None:
        raise HeaderError("not an image (unrecognised file format)")
    h = _READERS[fmt](data)
    if h.height <= 0 or h.width <= 0:
        raise HeaderError(f"corrupt {fmt} (image size {h.width}x{h.height})")
    return h


def jpeg_frame(data: bytes) -> tuple[int, int, int, int, bool]:
    """(height, width, components, offset of the first scan, progressive) by walking the JPEG marker segments.

    Walking segments (not searching bytes) skips EXIF thumbnails, which are complete
    JPEGs with their own end markers inside the APP1 segment.
    """
    i, n = 2, len(data)
    height = width = -1
    components, progressive = 3, False
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise HeaderError("corrupt JPEG (bad marker in header)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            raise HeaderError("corrupt JPEG (ends before any image data)")
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            if width < 0:
                raise HeaderError("corrupt JPEG (no frame header)")
            return height, width, components, i, progressive
        if marker in _JPEG_SOF and i + 10 <= n:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            components = data[i + 9]
            progressive = marker in _JPEG_PROGRESSIVE
        i += 2 + seglen
    raise HeaderError("truncated JPEG (header incomplete)")


def _jpeg(data: bytes) -> ImageHeader:
    h, w, c, sos, progressive = jpeg_frame(data)
    if h == 0:
        raise HeaderError("unsupported JPEG (height defined later in the file, DNL)")
    return ImageHeader("JPEG", h, w, max(1, c), 1, progressive, data_offset=sos)


def _png(data: bytes) -> ImageHeader:
    if len(data) < 29 or data[12:16] != b"IHDR":
        raise HeaderError("corrupt PNG (no image header)")
    w, h = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    if colour not in _PNG_CHANNELS:
        raise HeaderError(f"corrupt PNG (colour type {colour})")
    return ImageHeader("PNG", h, w, _PNG_CHANNELS[colour], 2 if depth == 16 else 1, orientation=_png_orientation(data))


def _png_orientation(data: bytes) -> int:
    """EXIF orientation from a PNG's eXIf chunk (before the image data), else 1."""
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind == b"eXIf":
            return exif_orientation(data[i + 8 : i + 8 + length])
        if kind in (b"IDAT", b"IEND"):
            return 1
        i += 12 + length
    return 1


def _gif(data: bytes) -> ImageHeader:
    if len(data) < 10:
        raise HeaderError("corrupt GIF (no screen descriptor)")
    w, h = struct.unpack("<HH", data[6:10])
    # The decoder composes frames on a canvas of at least the logical screen; a frame may
    # declare itself bigger, so take the largest size any image descriptor names.
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while i < len(data):
        block = data[i]
        if block == 0x2C and i + 10 <= len(data):  # image descriptor
            fw, fh = struct.unpack("<HH", data[i + 5 : i + 9])
            w, h = max(w, fw), max(h, fh)
            flags = data[i + 9]
            i += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            i = _skip_sub_blocks(data, i)
        elif block == 0x21 and i + 2 <= len(data):  # extension
            i = _skip_sub_blocks(data, i + 2)
        else:
            break
    return ImageHeader("GIF", h, w, 4)


def _skip_sub_blocks(data: bytes, i: int) -> int:
    while i < len(data) and data[i]:
        i += data[i] + 1
    return i + 1


def _bmp(data: bytes) -> ImageHeader:
    if len(data) < 30:
        raise HeaderError("corrupt BMP (no image header)")
    size = int.from_bytes(data[14:18], "little")
    if size == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack("<HH", data[18:22])
        bits = int.from_bytes(data[24:26], "little")
    else:
        w, h = struct.unpack("<ii", data[18:26])
        bits = int.from_bytes(data[28:30], "little")
    return ImageHeader("BMP", abs(h), abs(w), 4 if bits == 32 else 3)


def _tiff(data: bytes) -> ImageHeader:
    tags = _ifd0(data, 0, {256, 257, 258, 277})
    if 256 not in tags or 257 not in tags:
        raise HeaderError("corrupt TIFF (no image size)")
    bits = tags.get(258, 8)
    channels = tags.get(277, 1)
    # OpenCV reads TIFF through an RGBA buffer for most layouts: count 4 channels at least.
    return ImageHeader("TIFF", tags[257], tags[256], max(4, channels), 2 if bits > 8 else 1)


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return ImageHeader("WEBP", h & 0x3FFF, w & 0x3FFF, 3)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("WEBP", ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1, 4)
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("WEBP", h, w, 4, orientation=_webp_orientation(data) if data[20] & 0x08 else 1)
    raise HeaderError("corrupt WebP (no image header)")


def _webp_orientation(data: bytes) -> int:
    i = 12
    while i + 8 <= len(data):
        kind, length = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        if kind == b"EXIF":
            return exif_orientation(data[i + 8 : i + 8 + length])
        i += 8 + length + (length & 1)
    return 1


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (0x0112) of a TIFF-structured EXIF block (an "Exif\\0\\0" prefix is allowed), else 1."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    try:
        value = _ifd0(exif, 0, {0x0112}).get(0x0112, 1)
    except HeaderError:
        return 1
    return value if 1 <= value <= 8 else 1


def _ifd0(data: bytes, base: int, wanted: set[int]) -> dict[int, int]:
    """The wanted integer tags of the first IFD of a TIFF structure starting at `base`."""
    order = data[base : base + 2]
    if order not in (b"II", b"MM") or len(data) < base + 8:
        raise HeaderError("corrupt TIFF (no header)")
    e = "<" if order == b"II" else ">"
    offset = base + struct.unpack(e + "I", data[base + 4 : base + 8])[0]
    if offset + 2 > len(data):
        raise HeaderError("corrupt TIFF (directory outside the file)")
    count = struct.unpack(e + "H", data[offset : offset + 2])[0]
    out: dict[int, int] = {}
    for k in range(count):
        p = offset + 2 + 12 * k
        if p + 12 > len(data):
            break
        tag, kind, n = struct.unpack(e + "HHI", data[p : p + 8])
        if tag not in wanted or kind not in (3, 4):
            continue
        size = 2 if kind == 3 else 4
        # The first value sits in the entry when all values fit in 4 bytes, else at the offset it holds.
        at = p + 8 if n * size <= 4 else base + struct.unpack(e + "I", data[p + 8 : p + 12])[0]
        if at + size <= len(data):
            out[tag] = struct.unpack(e + ("H" if kind == 3 else "I"), data[at : at + size])[0]
    return out


_READERS = {"JPEG": _jpeg, "PNG": _png, "GIF": _gif, "BMP": _bmp, "TIFF": _tiff, "WEBP": _webp}
