"""Decode stage: file bytes → an RGB Pillow image the teachers can score, or a recorded reason why not.

Every odd input is either converted (greyscale, RGBA, palette, CMYK, 16-bit, EXIF-rotated,
animated) or rejected with a `DecodeError` whose message is the reason stored next to the path.
Nothing here ever modifies the file on disk.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distill.errors import DistillError
from distill.names import as_text

# Camera RAW files go through libraw (rawpy); HEIC/HEIF through libheif (pillow-heif).
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".dng", ".rw2"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
) | RAW_EXTENSIONS | HEIF_EXTENSIONS
# A RAW's embedded JPEG preview is used when its long side reaches this (or the draft size):
# decoding it is ~50x cheaper than demosaicing, and it is the camera's own rendering.
RAW_PREVIEW_MIN_SIDE = 1024
# Below this the NSS statistics of BRISQUE/PIQE (computed at two scales) are meaningless.
MIN_SIDE = 32
# Checked from the header, before any pixel is decoded: 200 MP covers every real camera.
MAX_PIXELS = 200_000_000
ORIGINAL_SIZE_KEY = "distill.original_size"
# No photo file is larger (a 200 MP 16-bit TIFF is 1.2 GB); reading more only exhausts memory.
MAX_FILE_BYTES = 2 * 1024**3
# Above this, a file with under 1/8 of its size on disk is sparse, not a photo; below it, file
# systems that store small files compressed or inline could look the same.
SPARSE_MIN_BYTES = 64 * 1024**2


class DecodeError(Exception):
    """Why an input could not become an image; the message is what errors.parquet records."""


@dataclass
class Decoded:
    image: Image.Image  # RGB, EXIF orientation applied, possibly draft-reduced
    width: int  # original size after EXIF rotation, before any draft reduction
    height: int
    sha1: str  # of the file's bytes
    notes: str = ""  # conversions applied, e.g. "cmyk->rgb"
    taken_at: str | None = None  # EXIF DateTimeOriginal[.subseconds], "YYYY:MM:DD HH:MM:SS"


def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


_register_heif()


def _with_subseconds(taken, subseconds) -> str | None:
    """"YYYY:MM:DD HH:MM:SS[.ss]": bursts are fractions of a second apart."""
    if not isinstance(taken, str) or not taken.strip():
        return None
    subseconds = str(subseconds or "").strip()
    return f"{taken.strip()}.{subseconds}" if subseconds.isdigit() else taken.strip()


def capture_time(exif: Image.Exif) -> str | None:
    """EXIF DateTimeOriginal (else DateTime) with its sub-seconds, read by Pillow."""
    photo = exif.get_ifd(0x8769)
    return _with_subseconds(photo.get(0x9003) or exif.get(0x0132), photo.get(0x9291))


def decode_raw(data: bytes, *, draft_size: int | None = None, **opts) -> Decoded:
    """A camera RAW: its embedded JPEG preview when that is large enough, else a half-size
    demosaic by libraw (camera white balance). Size and capture time are the sensor's."""
    import rawpy

    try:
        raw = rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, ValueError) as exc:
        raise DecodeError(f"not a RAW file libraw can read: {type(exc).__name__}") from None
    with raw:
        width, height = _raw_size(raw)
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawError, ValueError):
            thumb = None
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            preview = decode_bytes(thumb.data, draft_size=draft_size, **opts)
            if max(preview.width, preview.height) >= max(draft_size or 0, RAW_PREVIEW_MIN_SIDE):
                return _as_raw(preview, data, width, height, "raw: embedded preview")
        try:
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        except (rawpy.LibRawError, ValueError) as exc:
            raise DecodeError(f"corrupt RAW: {type(exc).__name__}") from None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PPM")
    return _as_raw(decode_bytes(buffer.getvalue(), **opts), data, width, height,
                   "raw: half-size demosaic")


def _raw_size(raw) -> tuple[int, int]:
    """The sensor's output size, turned as the camera held it."""
    width, height = raw.sizes.width, raw.sizes.height
    return (height, width) if raw.sizes.flip in (5, 6) else (width, height)


def header_size(data: bytes, name: str | os.PathLike) -> tuple[int, int]:
    """Width and height without decoding pixels: Pillow's header, or libraw's for a RAW
    (whose TIFF-like container Pillow would read as its thumbnail, or not at all)."""
    try:
        if Path(str(name)).suffix.lower() in RAW_EXTENSIONS:
            import rawpy

            with rawpy.imread(io.BytesIO(data)) as raw:
                return _raw_size(raw)
        with Image.open(io.BytesIO(data)) as header:
            return header.size
    except Exception as exc:  # noqa: BLE001 - Pillow and libraw raise many kinds; one reason
        raise DecodeError(f"not an image: {type(exc).__name__}: {exc}") from None


def _raw_capture_time(data: bytes) -> str | None:
    """DateTimeOriginal from a RAW's own EXIF, read by exiv2 (libraw does not expose it)."""
    import exiv2

    try:
        image = exiv2.ImageFactory.open(data)
        image.readMetadata()
        exif = {datum.key(): datum.toString() for datum in image.exifData()}
    except exiv2.Exiv2Error:
        return None
    return _with_subseconds(exif.get("Exif.Photo.DateTimeOriginal")
                            or exif.get("Exif.Image.DateTime"),
                            exif.get("Exif.Photo.SubSecTimeOriginal"))


def _as_raw(decoded: Decoded, data: bytes, width: int, height: int, how: str) -> Decoded:
    """The decoded preview or demosaic, described as the RAW file it came from."""
    decoded.sha1 = hashlib.sha1(data).hexdigest()
    decoded.width, decoded.height = width, height
    decoded.image.info[ORIGINAL_SIZE_KEY] = (width, height)
    decoded.notes = "; ".join(filter(None, [how, decoded.notes]))
    decoded.taken_at = _raw_capture_time(data) or decoded.taken_at
    return decoded


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    mode = img.mode
    if mode == "RGB":
        return img, ""
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: Pillow's own convert() clips to 255 instead of rescaling.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if values.max() > 255 or mode.startswith("I;16") else 255.0
        grey = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), "16bit->8bit"
    if mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), "float->8bit"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        # Transparent pixels have undefined colour; judge the image as it shows on white.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), f"{mode.lower()}->rgb on white"
    return img.convert("RGB"), f"{mode.lower()}->rgb"


def decode_bytes(
    data: bytes,
    *,
    draft_size: int | None = None,
    max_side: int | None = None,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> Decoded:
    """Decode image bytes into RGB.

    `draft_size` lets a JPEG decode straight to ≥ that many px per side (DCT scaling, far
    cheaper than decoding in full and resizing); `max_side` then caps the long side.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image: unrecognised format") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # a decoder's own limit, e.g. a PNG text
        raise DecodeError(f"unreadable image: {exc}") from None  # chunk that inflates too far

    header_w, header_h = img.size
    check_pixels(header_w, header_h, max_pixels)
    notes = []
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"animated: first of {img.n_frames} frames")
    try:
        exif = img.getexif()
        orientation, taken_at = exif.get(0x0112, 1), capture_time(exif)
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from None

    width, height = oriented_size(header_w, header_h, orientation)
    if orientation not in (1, None):
        notes.append(f"exif orientation {orientation} applied")
    check_min_side(width, height, min_side)

    img, conversion = _to_rgb(img)
    if conversion:
        notes.append(conversion)
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        check_thin(width, height, img.size, max_side, min_side)
    img.info[ORIGINAL_SIZE_KEY] = (width, height)
    return Decoded(img, width, height, sha1, "; ".join(notes), taken_at)


# The rules every decoder applies (`decode_bytes` here, `decode_device` on a torch device),
# each with the one message an error row records.

def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse a header that claims more than max_pixels, before any pixel is decoded."""
    if width * height > max_pixels:
        raise DecodeError(f"decompression bomb: header claims {width}x{height} "
                          f"> {max_pixels} pixels (max_pixels)")


def oriented_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """The size once EXIF orientation is applied (5-8 turn the image by 90 degrees)."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_min_side(width: int, height: int, min_side: int) -> None:
    if min(width, height) < min_side:
        raise DecodeError(f"too small: {width}x{height} (< {min_side} px per side)")


def check_thin(width: int, height: int, capped: tuple[int, int], max_side: int,
               min_side: int) -> None:
    """A panorama strip: too thin once the long side is capped at max_side."""
    if min(capped) < min_side:
        raise DecodeError(f"too thin: {width}x{height} becomes {capped[0]}x{capped[1]} at "
                          f"max_side {max_side} (< {min_side} px per side)")


def read_bytes(path: str | os.PathLike, *, follow_symlinks: bool = True,
               max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of sane size, or a DecodeError saying what the path is.

    Every input the tool did not write comes through here (or through `open_regular`). The
    file is opened without blocking (a FIFO would wait forever for a writer) and checked on
    the open descriptor, so what is checked is what is read: a directory, device, FIFO or
    socket, a file over `max_bytes`, or a large sparse file (what a corrupt FAT entry looks
    like: gigabytes, nothing on disk) is refused before a byte is read. A file that grows
    while it is read is refused too. follow_symlinks=False refuses a symbolic link itself,
    for callers that move or link the file rather than read it."""
    with open_regular(path, follow_symlinks=follow_symlinks, max_bytes=max_bytes) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            data = handle.read(size + 1)
        except OSError as exc:
            raise DecodeError(_unreadable(path, exc)) from None
    if len(data) != size:
        raise DecodeError(f"changed while being read ({size} bytes, then {len(data)}"
                          "): still being written?")
    return data


def read_input(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """`read_bytes` for a file a whole command stands on (a config, a file list, COCO
    annotations, human scores): a refusal is the command's one-line error naming the file."""
    try:
        return read_bytes(path, max_bytes=max_bytes)
    except DecodeError as exc:
        raise DistillError(f"{what} {as_text(path)}: {exc}") from None


def open_regular(path: str | os.PathLike, *, follow_symlinks: bool = True,
                 max_bytes: int | None = MAX_FILE_BYTES) -> io.BufferedReader:
    """`read_bytes`' rule for a file read in parts (a tar shard): an open binary handle of a
    regular file that is not sparse and, unless max_bytes is None, not over max_bytes."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise DecodeError(_unreadable(path, exc)) from None
    try:
        refuse_unless_regular(os.fstat(descriptor), max_bytes)
        return os.fdopen(descriptor, "rb")
    except OSError as exc:
        os.close(descriptor)
        raise DecodeError(_unreadable(path, exc)) from None
    except BaseException:
        os.close(descriptor)
        raise


def refuse_unless_regular(status: os.stat_result, max_bytes: int | None = MAX_FILE_BYTES) -> None:
    """DecodeError unless `status` (an fstat or lstat) is a regular file of sane size."""
    if not stat.S_ISREG(status.st_mode):
        raise DecodeError(f"is {_file_kind(status.st_mode)}, not a regular file")
    on_disk = status.st_blocks * 512
    if status.st_size > SPARSE_MIN_BYTES and on_disk * 8 < status.st_size:
        raise DecodeError(f"sparse file: {status.st_size} bytes with {on_disk} on disk "
                          "(a damaged file-system entry?)")
    if max_bytes is not None and status.st_size > max_bytes:
        raise DecodeError(f"too large: {status.st_size} bytes > {max_bytes} (max_bytes)")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "an unknown kind of file"


def _unreadable(path: str | os.PathLike, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "file not found (vanished or never existed)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "unreadable: permission denied"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link, not followed"
    if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket cannot be opened
        try:
            return f"is {_file_kind(os.lstat(path).st_mode)}, not a regular file"
        except OSError:
            pass
    return f"unreadable: {exc.strerror or exc}"


def decode_named(data: bytes, name: str | os.PathLike, **opts) -> Decoded:
    """Decode bytes whose file name is known: RAW files go to libraw by their extension
    (their TIFF-like containers would otherwise open as a tiny thumbnail)."""
    if Path(str(name)).suffix.lower() in RAW_EXTENSIONS:
        return decode_raw(data, **opts)
    return decode_bytes(data, **opts)


def decode_path(path: str | os.PathLike, **opts) -> Decoded:
    return decode_named(read_bytes(path), path, **opts)


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, by extension) into a sorted, de-duplicated list.
    Whatever is named like an image and is not a folder is listed (a FIFO, a device, a
    dangling link): reading it is refused with its reason, so it is reported, not skipped."""
    found: dict[Path, None] = {}
    for entry in map(Path, paths):
        if entry.is_dir():
            for child in sorted(entry.rglob("*")):
                if not child.is_dir() and child.suffix.lower() in IMAGE_EXTENSIONS:
                    found[child] = None
        else:
            found[entry] = None  # explicit files are kept even if missing: they get an error row
    return list(found)
