"""Real camera-format files made offline from any photo, for tests and benchmarks: DNG (the
RAW format every raw converter reads) written by pidng from an RGGB mosaic, optionally with
an embedded JPEG preview added by exiv2 as cameras do, and HEIC written by pillow-heif.
All carry an EXIF capture time, so burst splitting sees them as a camera would."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image


def write_dng(image: Image.Image, path: Path, preview_side: int | None = None,
              taken: datetime | None = None) -> Path:
    """A 12-bit RGGB DNG of `image`; with preview_side, an embedded JPEG preview that size."""
    import exiv2
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (
        CalibrationIlluminant,
        CFAPattern,
        DNGVersion,
        Orientation,
        PhotometricInterpretation,
        PreviewColorSpace,
    )

    rgb = np.asarray(image.convert("RGB"), dtype=np.uint16) * 16  # 8 → 12 bits
    height, width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    mosaic = np.empty((height, width), np.uint16)
    mosaic[0::2, 0::2] = rgb[0:height:2, 0:width:2, 0]
    mosaic[0::2, 1::2] = rgb[0:height:2, 1:width:2, 1]
    mosaic[1::2, 0::2] = rgb[1:height:2, 0:width:2, 1]
    mosaic[1::2, 1::2] = rgb[1:height:2, 1:width:2, 2]
    tags = DNGTags()
    for tag, value in [
            (Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width),
            (Tag.TileLength, height), (Tag.Orientation, Orientation.Horizontal),
            (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
            (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 12), (Tag.CFARepeatPatternDim, [2, 2]),
            (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
            (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1],
                                [1, 1]]),
            (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
            (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.BaselineExposure, [[0, 100]]),
            (Tag.Make, "distill"), (Tag.Model, "test camera"), (Tag.DNGVersion, DNGVersion.V1_4),
            (Tag.DNGBackwardVersion, DNGVersion.V1_2),
            (Tag.PreviewColorSpace, PreviewColorSpace.sRGB)]:
        tags.set(tag, value)
    path = Path(path)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(mosaic, filename=str(path.with_suffix("")))  # pidng appends ".dng"
    written = path.with_suffix(".dng")
    if written != path:
        written.rename(path)
    metadata = exiv2.ImageFactory.open(str(path))
    metadata.readMetadata()
    exif = metadata.exifData()
    if taken is not None:
        exif["Exif.Photo.DateTimeOriginal"] = taken.strftime("%Y:%m:%d %H:%M:%S")
        exif["Exif.Photo.SubSecTimeOriginal"] = f"{taken.microsecond // 10000:02d}"
    if preview_side:
        preview = image.convert("RGB")
        preview.thumbnail((preview_side, preview_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        preview.save(buffer, "JPEG", quality=88)
        exiv2.ExifThumb(exif).setJpegThumbnail(buffer.getvalue())
    metadata.setExifData(exif)
    metadata.writeMetadata()
    return path


def write_heic(image: Image.Image, path: Path, taken: datetime | None = None) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    if taken is not None:
        exif[0x8769] = {0x9003: taken.strftime("%Y:%m:%d %H:%M:%S")}
    image.convert("RGB").save(path, format="HEIF", quality=85, exif=exif.tobytes())
    return Path(path)
