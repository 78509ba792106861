"""Sources stage: where images come from, behind one small interface.

A source enumerates `SourceItem`s in a deterministic order and reads an item's bytes from its
`locator`, a plain string; the labeler freezes the enumeration in `inputs.parquet`, so a
resumed or distributed run sees exactly the same list. Sources are picklable, so DataLoader
workers can read with them.

| kind        | input                                                          | key             |
|-------------|----------------------------------------------------------------|-----------------|
| folder      | a folder, recursively, by image extension                      | relative path   |
| filelist    | .txt (a path per line), .csv or .parquet with a `path` column   | the path        |
| coco        | an instances_*.json `images` list + its image folder           | COCO image id   |
| imagenet    | ILSVRC `train/<wnid>/*.JPEG` class folders, or the flat val one | relative path   |
| webdataset  | img2dataset tar shards: `key.jpg` (+ `key.json`)               | tar/key         |
| hf          | datasets: local parquet/arrow/imagefolder, or a hub name        | row index       |
"""

from __future__ import annotations

import csv
import importlib.util
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distill.decode import IMAGE_EXTENSIONS, read_bytes
from distill.errors import ConfigError


@dataclass(frozen=True)
class SourceItem:
    key: str  # unique within the source, stable across runs
    path: str  # what a person reads in the outputs
    locator: str  # what `Source.read` needs


class Source:
    kind = "source"

    def __init__(self, name: str | None = None):
        self.name = name or self.kind

    def items(self) -> Iterator[SourceItem]:
        raise NotImplementedError

    def read(self, locator: str) -> bytes:
        return read_bytes(locator)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: str, name: str | None = None):
        super().__init__(name)
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"source.root: {self.root} is not a folder")

    def items(self):
        for path in _image_files(self.root):
            yield SourceItem(str(path.relative_to(self.root)), str(path), str(path))


class FileListSource(Source):
    kind = "filelist"

    def __init__(self, file: str, column: str = "path", name: str | None = None):
        super().__init__(name)
        self.file, self.column = Path(file).expanduser().resolve(), column

    def _paths(self) -> list[str]:
        suffix = self.file.suffix.lower()
        if suffix == ".txt":
            return [line.strip() for line in self.file.read_text().splitlines() if line.strip()]
        if suffix == ".csv":
            with self.file.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if rows and self.column not in rows[0]:
                raise ConfigError(f"source.column: {self.file} has no column {self.column!r}")
            return [row[self.column] for row in rows]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return [str(p) for p in pq.read_table(self.file, columns=[self.column]).column(0).to_pylist()]
        raise ConfigError(f"source.file: {self.file} must be .txt, .csv or .parquet")

    def items(self):
        base = self.file.parent
        for entry in self._paths():
            path = Path(entry) if Path(entry).is_absolute() else base / entry
            yield SourceItem(entry, str(path), str(path))


class CocoSource(Source):
    kind = "coco"

    def __init__(self, annotations: str, images: str, name: str | None = None):
        super().__init__(name)
        self.annotations, self.images = Path(annotations).expanduser().resolve(), Path(images).expanduser().resolve()

    def items(self):
        listing = json.loads(self.annotations.read_text()).get("images")
        if listing is None:
            raise ConfigError(f"source.annotations: {self.annotations} has no 'images' list")
        for image in sorted(listing, key=lambda entry: entry["id"]):
            path = self.images / image["file_name"]
            yield SourceItem(str(image["id"]), str(path), str(path))


class ImageNetSource(FolderSource):
    """Class folders (`train/n01440764/x.JPEG`) or a flat val folder: both are folders of
    images, so enumeration is the folder source's; the key keeps the wnid prefix."""

    kind = "imagenet"


class WebDatasetSource(Source):
    """img2dataset output: tar shards holding `key.jpg` (+ `key.json`, `key.txt`).

    Members are indexed once (name, offset, size), so workers read an image with one seek.
    """

    kind = "webdataset"

    def __init__(self, shards: str, name: str | None = None):
        super().__init__(name)
        pattern = Path(shards).expanduser().resolve()
        self.tars = sorted(pattern.parent.glob(pattern.name)) if "*" in pattern.name else (
            sorted(pattern.glob("*.tar")) if pattern.is_dir() else [pattern])
        if not self.tars:
            raise ConfigError(f"source.shards: no .tar files match {shards}")

    def items(self):
        for tar_path in self.tars:
            with tarfile.open(tar_path) as archive:
                for member in archive:
                    suffix = Path(member.name).suffix.lower()
                    if member.isfile() and suffix in IMAGE_EXTENSIONS:
                        key = f"{tar_path.stem}/{Path(member.name).stem}"
                        locator = f"{tar_path}::{member.offset_data}::{member.size}"
                        yield SourceItem(key, f"{tar_path}::{member.name}", locator)

    def read(self, locator: str) -> bytes:
        tar_path, offset, size = locator.rsplit("::", 2)
        with open(tar_path, "rb") as handle:
            handle.seek(int(offset))
            return handle.read(int(size))


class HFSource(Source):
    """A Hugging Face `datasets` dataset with an image column, read as raw bytes.

    `data` is a local parquet/arrow file or glob, a folder saved with `save_to_disk`, an
    imagefolder, or a hub name (downloaded into the datasets cache, so only with a network).
    Streaming is not supported: a frozen, indexable input list is what makes runs resumable.
    """

    kind = "hf"

    def __init__(self, data: str, split: str = "train", image_column: str = "image",
                 name: str | None = None):
        super().__init__(name)
        self.data, self.split, self.image_column = data, split, image_column
        self._dataset = None

    def __getstate__(self):
        return {**self.__dict__, "_dataset": None}  # each worker reopens (memory-mapped: cheap)

    def dataset(self):
        if self._dataset is None:
            import datasets

            path = Path(self.data)
            if path.is_dir() and (path / "dataset_info.json").exists():
                loaded = datasets.load_from_disk(str(path))
                loaded = loaded[self.split] if isinstance(loaded, datasets.DatasetDict) else loaded
            elif path.is_dir():
                loaded = datasets.load_dataset("imagefolder", data_dir=str(path), split=self.split)
            elif path.suffix in (".parquet", ".arrow") or "*" in path.name:
                builder = "arrow" if path.suffix == ".arrow" else "parquet"
                loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
            else:
                loaded = datasets.load_dataset(self.data, split=self.split)
            if self.image_column not in loaded.column_names:
                raise ConfigError(f"source.image_column: {self.data} has no column "
                                  f"{self.image_column!r} (has {loaded.column_names})")
            self._dataset = loaded.cast_column(self.image_column, datasets.Image(decode=False))
        return self._dataset

    def items(self):
        for index, row in enumerate(self.dataset()):
            cell = row[self.image_column]
            shown = (cell or {}).get("path") or f"{self.data}#{index}"
            yield SourceItem(str(index), str(shown), str(index))

    def read(self, locator: str) -> bytes:
        cell = self.dataset()[int(locator)][self.image_column]
        if cell.get("bytes"):
            return cell["bytes"]
        return read_bytes(cell["path"])


SOURCES: dict[str, type[Source]] = {
    cls.kind: cls for cls in (FolderSource, FileListSource, CocoSource, ImageNetSource,
                              WebDatasetSource, HFSource)
}


def create_source(config: dict) -> Source:
    """Build a source from its config mapping: `{kind: folder, root: ..., name: ...}`."""
    options = dict(config)
    kind = options.pop("kind", None)
    if kind not in SOURCES:
        raise ConfigError(f"source.kind must be one of {sorted(SOURCES)}, got {kind!r}")
    try:
        return SOURCES[kind](**options)
    except TypeError as exc:
        raise ConfigError(f"source ({kind}): {exc}") from None


def guess_source(path: str) -> dict:
    """The source config for a bare `--source PATH`."""
    target = Path(path)
    if target.is_dir():
        if any(target.glob("*.tar")):
            return {"kind": "webdataset", "shards": str(target)}
        return {"kind": "folder", "root": str(target)}
    if target.suffix.lower() in (".txt", ".csv"):
        return {"kind": "filelist", "file": str(target)}
    if target.suffix.lower() == ".parquet":
        return {"kind": "hf", "data": str(target)}
    if target.suffix.lower() == ".tar" or "*" in target.name:
        return {"kind": "webdataset", "shards": str(target)}
    if target.suffix.lower() == ".json":
        raise ConfigError("a COCO source needs a config: {kind: coco, annotations: ..., images: ...}")
    raise ConfigError(f"--source {path}: not a folder, file list, parquet or tar shard")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def packaged_photos() -> list[Path]:
    """Real photos shipped by scikit-image, matplotlib, scikit-learn and pyiqa, found without
    a download."""
    folders = []
    if skimage := _package_dir("skimage"):
        folders.append(skimage / "data")
    if matplotlib := _package_dir("matplotlib"):
        folders.append(matplotlib / "mpl-data" / "sample_data")
    if sklearn := _package_dir("sklearn"):
        folders.append(sklearn / "datasets" / "images")  # china, flower
    if pyiqa := _package_dir("pyiqa"):
        # ResultsCalibra: 5 references and their distorted twins; pyiqa's wheel also installs
        # its speed-test photos (a SPAQ phone photo, three video frames) as a top-level `tests`
        folders += [pyiqa.parent / "ResultsCalibra" / "dist_dir",
                    pyiqa.parent / "ResultsCalibra" / "ref_dir",
                    pyiqa.parent / "tests" / "test_efficiency_img_dir"]
    return [path for folder in folders if folder.is_dir() for path in _image_files(folder)]

