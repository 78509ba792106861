"""Odd inputs are converted or skipped with a reason; a teacher never crashes a batch."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from distill.decode import DecodeError, decode_bytes, decode_path
from teachers import create_teacher
from teachers.technical import TechnicalTeacher


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def odd_inputs(photo) -> dict[str, bytes]:
    """The odd-but-valid images a real photo folder holds, each made from a real photo."""
    small = photo.resize((150, 100))
    grey16 = (np.asarray(small.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = small.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    frames = [small.convert("P"), small.rotate(180).convert("P")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    return {
        "greyscale": _encode(small.convert("L"), "PNG"),
        "rgba": _encode(rgba, "PNG"),
        "cmyk": _encode(small.convert("CMYK"), "JPEG", quality=92),
        "16bit": _encode(Image.fromarray(grey16), "PNG"),
        "palette": _encode(small.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "exif_rotated": _encode(small, "JPEG", exif=exif.tobytes()),
        "animated_gif": animated.getvalue(),
    }


def test_odd_inputs_become_rgb_with_a_note(odd_inputs):
    for kind, data in odd_inputs.items():
        decoded = decode_bytes(data)
        assert decoded.image.mode == "RGB", kind
        assert decoded.notes, f"{kind}: the conversion should be recorded"
    rotated = decode_bytes(odd_inputs["exif_rotated"])
    assert (rotated.width, rotated.height) == (100, 150) == rotated.image.size
    sixteen = np.asarray(decode_bytes(odd_inputs["16bit"]).image)
    assert 60 < sixteen.mean() < 200, "16-bit values must be rescaled, not clipped to white"


def test_offline_teachers_score_every_odd_input(odd_inputs):
    images = [decode_bytes(data).image for data in odd_inputs.values()]
    for name in ("brisque", "piqe", "technical"):
        output = create_teacher(name).score(images)
        assert not output.errors, (name, output.errors)
        assert np.isfinite(output.scores).all(), name


def _png_claiming(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR (with a valid CRC) claims another size."""
    data = bytearray(_encode(Image.new("RGB", (64, 64), (90, 120, 150)), "PNG"))
    ihdr = 8 + 4  # signature, then the chunk length
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"this is a text file, not a photo\n", "not an image"),
    (_png_claiming(40000, 40000), "decompression bomb"),
])
def test_undecodable_bytes_give_a_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data)


def test_tiny_and_truncated_images_give_a_reason(photo):
    with pytest.raises(DecodeError, match="too small: 20x20"):
        decode_bytes(_encode(photo.resize((20, 20)), "PNG"))
    jpeg = _encode(photo, "JPEG", quality=90)
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode_bytes(jpeg[: len(jpeg) // 2])


def test_missing_and_directory_paths_give_a_reason(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        decode_path(tmp_path / "gone.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(DecodeError, match="is a directory"):
        decode_path(tmp_path / "folder.jpg")


def test_only_regular_files_of_sane_size_are_read(tmp_path, photo):
    """Nothing that is not a photo-sized regular file is read: each returns at once with its
    reason (a FIFO or /dev/zero would block or never end; a sparse 20 GB file would fill memory)."""
    import socket

    from distill.decode import read_bytes

    jpeg = _encode(photo, "JPEG")
    (tmp_path / "real.jpg").write_bytes(jpeg)
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.symlink("real.jpg", tmp_path / "link.jpg")
    with open(tmp_path / "sparse.jpg", "wb") as handle:
        handle.truncate(20 * 1024**3)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "socket.jpg"))
    expected = {"fifo.jpg": "is a FIFO, not a regular file",
                "zero.jpg": "is a character device, not a regular file",
                "socket.jpg": "is a socket, not a regular file",
                "sparse.jpg": "sparse file: 21474836480 bytes with 0 on disk"}
    for name, reason in expected.items():
        with pytest.raises(DecodeError, match=reason):
            decode_path(tmp_path / name)
    listener.close()
    assert read_bytes(tmp_path / "link.jpg") == jpeg  # followed on purpose by readers
    with pytest.raises(DecodeError, match="is a symbolic link, not followed"):
        read_bytes(tmp_path / "link.jpg", follow_symlinks=False)
    with pytest.raises(DecodeError, match=rf"too large: {len(jpeg)} bytes > 1000 \(max_bytes\)"):
        read_bytes(tmp_path / "real.jpg", max_bytes=1000)


def test_draft_mode_decodes_jpeg_smaller_but_reports_original_size(photo):
    big = photo.resize((1600, 1064))
    decoded = decode_bytes(_encode(big, "JPEG", quality=90), draft_size=400)
    assert (decoded.width, decoded.height) == (1600, 1064)
    assert 400 <= min(decoded.image.size) < 1064


class _FailsOnTinyImages(TechnicalTeacher):
    """The real technical teacher, made to fail on one kind of input."""

    def _score_batch(self, images):
        if any(image.width == 33 for image in images):
            raise ValueError("synthetic failure")
        return super()._score_batch(images)


def test_one_failing_image_does_not_cost_the_batch(photo):
    bad = photo.resize((33, 40))
    images = [photo, bad, photo.rotate(90)]
    output = _FailsOnTinyImages().score(images)
    assert list(output.errors) == [1] and "synthetic failure" in output.errors[1]
    assert np.isnan(output.scores[1]) and np.isfinite(output.scores[[0, 2]]).all()
    assert np.isnan(output.extras["tech_sharpness"][1])


def test_a_decoder_limit_is_a_reason_not_a_crash(photo):
    """A 14 KB PNG whose zTXt chunk inflates past Pillow's MAX_TEXT_CHUNK (ValueError in open)."""
    png = _encode(photo.resize((64, 64)), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"\x00" * (2 * 1024**2), 9)
    chunk = (struct.pack(">I", len(text)) + b"zTXt" + text
             + struct.pack(">I", zlib.crc32(b"zTXt" + text) & 0xFFFFFFFF))
    with pytest.raises(DecodeError, match="unreadable image: Decompressed data too large"):
        decode_bytes(png[:33] + chunk + png[33:])  # after the 8-byte signature and IHDR
