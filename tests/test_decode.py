from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from agebatch.io.decode import DecodeError, DecodeOptions, decode_bytes, decode_into, jpeg_header, load_image
from agebatch.io.sources import Item

OPTS = DecodeOptions()


def _decode(path: Path, opts: DecodeOptions = OPTS) -> tuple[np.ndarray, str | None]:
    out = np.full((1, *opts.size, 3), 7, np.uint8)
    err = decode_into([Item(str(path), str(path))], out, opts)[0]
    return out[0], err


def test_real_face_matches_plain_opencv_pipeline(samples_dir: Path) -> None:
    for f in sorted(samples_dir.glob("*.jpg"))[:5]:
        ref = cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (128, 128), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        img, err = _decode(f)
        assert err is None
        assert np.array_equal(img, ref)


def test_every_fault_case_gets_its_outcome(fault_folder) -> None:
    folder, expect = fault_folder
    for name, expected in expect.items():
        img, err = _decode(folder / name)
        if expected is None:
            assert err is None, f"{name}: {err}"
            assert img.shape == (128, 128, 3) and img.dtype == np.uint8
            assert img.std() > 0, f"{name} decoded to a flat image"
        else:
            assert err is not None and expected in err, f"{name}: expected {expected!r}, got {err!r}"
            assert not img.any(), "failed rows are zero-filled"


def test_folder_path_is_an_error(tmp_path: Path) -> None:
    _, err = _decode(tmp_path)
    assert err == "is a folder, not a file"


def test_grayscale_gives_three_equal_channels(fault_folder) -> None:
    img, _ = _decode(fault_folder[0] / "gray.jpg")
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_alpha_is_composited_on_white(fault_folder) -> None:
    img, _ = _decode(fault_folder[0] / "alpha.png")
    assert (img[:, :60] == 255).all(), "transparent half is white"
    assert img[:, 70:].mean() < 250, "opaque half keeps the face"


def test_16bit_png_scales_to_the_8bit_original(fault_folder, samples_dir: Path) -> None:
    img16, _ = _decode(fault_folder[0] / "deep16.png")
    face = sorted(samples_dir.glob("*.jpg"))[0]
    img8, _ = _decode(face)
    assert np.array_equal(img16, img8), "x*257 scaled back must give x exactly"


def test_cmyk_jpeg_keeps_its_colours(fault_folder, samples_dir: Path) -> None:
    cmyk, _ = _decode(fault_folder[0] / "cmyk.jpg")
    rgb, _ = _decode(sorted(samples_dir.glob("*.jpg"))[0])
    assert np.abs(cmyk.astype(int) - rgb.astype(int)).mean() < 6


def test_exif_orientation_is_applied() -> None:
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, :50] = (255, 0, 0)  # left half red
    pim = Image.fromarray(img)
    exif = pim.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    pim.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    bgr = decode_bytes(buf.getvalue(), DecodeOptions(size=(60, 60)))  # no JPEG downscale
    assert bgr.shape[:2] == (100, 60), "portrait after rotation"
    assert bgr[10, 30, 2] > 200 and bgr[90, 30, 2] < 50, "red (left) is now on top"


def test_huge_jpeg_decodes_at_reduced_scale(fault_folder) -> None:
    data = (fault_folder[0] / "huge.jpg").read_bytes()
    assert jpeg_header(data)[:2] == (10000, 10000)
    assert decode_bytes(data, OPTS).shape == (1250, 1250, 3), "libjpeg 1/8 scaling, not a 300 MB decode"
    # The short side stays at or above the target's long side: 1/4 for 2000, 1/2 for 3000.
    assert decode_bytes(data, DecodeOptions(size=(2000, 2000))).shape == (2500, 2500, 3)
    assert decode_bytes(data, DecodeOptions(size=(3000, 3000))).shape == (5000, 5000, 3)


def test_pixel_limit_applies_before_decoding(fault_folder) -> None:
    data = (fault_folder[0] / "huge.jpg").read_bytes()
    with pytest.raises(DecodeError, match="image too large"):
        decode_bytes(data, DecodeOptions(max_pixels=1_000_000))


def test_byte_limit(samples_dir: Path) -> None:
    f = sorted(samples_dir.glob("*.jpg"))[0]
    with pytest.raises(DecodeError, match="file too large"):
        load_image(str(f), DecodeOptions(max_bytes=100))


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_fit_modes_on_a_wide_image(fit: str) -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = (0, 0, 255)  # left quarter red (BGR)
    img[:, 150:] = (255, 0, 0)  # right quarter blue
    data = cv2.imencode(".png", img)[1].tobytes()
    opts = DecodeOptions(size=(64, 64), fit=fit)  # type: ignore[arg-type]
    out = np.empty((64, 64, 3), np.uint8)
    from agebatch.io.decode import fit_resize

    fit_resize(decode_bytes(data, opts), opts, out)
    if fit == "stretch":
        assert out[32, 2, 0] == 255 and out[32, 61, 2] == 255
    elif fit == "crop":
        assert (out == 0).all(), "center crop keeps only the black middle"
    else:
        assert (out[:15] == 0).all() and (out[49:] == 0).all(), "letterbox bands"
        assert out[32, 2, 0] == 255


def test_options_validate() -> None:
    from agebatch.errors import AgebatchError  # a user's bad option: one line and exit 2, never a traceback

    with pytest.raises(AgebatchError):
        DecodeOptions(interpolation="bogus")  # type: ignore[arg-type]
    with pytest.raises(AgebatchError):
        DecodeOptions(fit="zoom")  # type: ignore[arg-type]
