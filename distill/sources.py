"""Sources stage: where images come from, behind one small interface.

A source enumerates `SourceItem`s in a deterministic order and reads an item's bytes from its
`locator`, a plain string; the labeler freezes the enumeration in `inputs.parquet`, so a
resumed or distributed run sees exactly the same list. Sources are picklable, so DataLoader
workers can read with them.

| kind        | input                                                          | key             |
|-------------|----------------------------------------------------------------|-----------------|
| folder      | a folder, recursively, by image extension                      | relative path   |
| filelist    | a manifest: .txt (a path per line), .csv or .parquet with a     | the path        |
|             | `path` (or `url`) column; read in batches, never as one list    |                 |
| coco        | an instances_*.json `images` list + its image folder           | COCO image id   |
| imagenet    | ILSVRC `train/<wnid>/*.JPEG` class folders, or the flat val one | relative path   |
| webdataset  | img2dataset tar shards: `key.jpg` (+ `key.json`)               | tar/key         |
| hf          | datasets: local parquet/arrow/imagefolder, or a hub name        | row index       |
|             | (`streaming: true`: rows stream, nothing is downloaded ahead)   |                 |

Folders, manifests, manifest entries and tar shards may be remote (s3://, gs://, hf://,
https://: `distill.remote`, through fsspec); a remote object is read under the same rule as a
local file (a file, of sane size), and a tar member by a range read of its offset and size.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import posixpath
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from distill import remote
from distill.decode import (
    IMAGE_EXTENSIONS,
    MAX_FILE_BYTES,
    DecodeError,
    open_regular,
    read_bytes,
    read_input,
    read_remote,
)
from distill.errors import ConfigError
from distill.names import as_path, as_text


@dataclass(frozen=True)
class SourceItem:
    key: str  # unique within the source, stable across runs
    path: str  # what a person reads in the outputs
    locator: str  # what `Source.read` needs
    refused: str | None = None  # why it cannot be read, when the listing already knows

    @classmethod
    def from_row(cls, row: dict) -> SourceItem:
        """An item back from its row of inputs.parquet (a run from before `refused`: None)."""
        return cls(row["key"], row["path"], row["locator"], row.get("refused"))


ITEM_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string()), ("locator", pa.string()),
                         ("refused", pa.string())])
BATCH_ROWS = 65536


def item_table(items: list[SourceItem]) -> pa.Table:
    return pa.table([[i.key for i in items], [i.path for i in items],
                     [i.locator for i in items], [i.refused for i in items]], schema=ITEM_SCHEMA)


class Source:
    kind = "source"
    path_options: tuple[str, ...] = ()  # options naming local files, made absolute

    def __init__(self, name: str | None = None):
        self.name = name or self.kind

    def items(self) -> Iterator[SourceItem]:
        raise NotImplementedError

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """The items as tables of `ITEM_SCHEMA`, at most `rows` each, in `items` order: what
        the labeler freezes, without a list of every item (a manifest source builds them in
        Arrow, without a Python object per item)."""
        chunk: list[SourceItem] = []
        for item in self.items():
            chunk.append(item)
            if len(chunk) == rows:
                yield item_table(chunk)
                chunk = []
        if chunk:
            yield item_table(chunk)

    def read(self, locator: str) -> bytes:
        return read_bytes(as_path(locator))


def inside(root: Path, entry: str) -> str:
    """The file `entry` (as text, relative to `root` or absolute) names, if it resolves
    inside `root`; else a DecodeError. A manifest (COCO, a file list) is data, and a name in
    it must not reach outside the folder it declares (`../../etc/passwd`, `/dev/zero`, a link
    that leads out)."""
    resolved = os.path.realpath(os.path.join(root, as_path(entry)))
    if os.path.commonpath([resolved, str(root)]) != str(root):
        raise DecodeError(f"outside the source root {as_text(root)} (resolves to "
                          f"{as_text(resolved)})")
    return resolved


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


class FolderSource(Source):
    kind = "folder"
    path_options = ("root",)

    def __init__(self, root: str, name: str | None = None):
        super().__init__(name)
        if remote.is_remote(root):
            self.root = root.rstrip("/")
            return
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"source.root: {as_text(self.root)} is not a folder")

    def items(self):
        if isinstance(self.root, str):  # a remote prefix: its objects, named like images
            try:
                urls = remote.find_files(self.root, IMAGE_EXTENSIONS)
            except remote.RemoteError as exc:
                raise ConfigError(f"source.root: {exc}") from None
            for url in urls:
                yield SourceItem(url[len(self.root) + 1:], url, url)
            return
        for path in _image_files(self.root):
            yield SourceItem(as_text(path.relative_to(self.root)), as_text(path), as_text(path))


class FileListSource(Source):
    """A manifest: paths (or URLs) listed in a file, each relative one resolved against `root`
    (default: the list's folder) and read only if it lies inside it. A parquet or CSV
    manifest is read in batches by Arrow, so a 10 M-row one never becomes a Python list; its
    column is `column`, else `url` when it has no `path` (img2dataset's manifests)."""

    kind = "filelist"
    path_options = ("file", "root")

    def __init__(self, file: str, column: str = "path", root: str | None = None,
                 name: str | None = None):
        super().__init__(name)
        self.column = column
        self.file = file if remote.is_remote(file) else Path(file).expanduser().resolve()
        if root and remote.is_remote(root):
            self.root = root.rstrip("/")
        elif root:
            self.root = Path(root).expanduser().resolve()
        else:
            self.root = (remote.parent(self.file) if isinstance(self.file, str)
                         else self.file.parent)
        if isinstance(self.root, Path) and not self.root.is_dir():
            raise ConfigError(f"source.root: {as_text(self.root)} is not a folder")
        suffix = posixpath.splitext(str(self.file))[1].lower()
        if suffix not in (".txt", ".csv", ".parquet"):
            raise ConfigError(f"source.file: {as_text(self.file)} must be .txt, .csv or .parquet")
        self.suffix = suffix

    def _open(self):
        """The manifest as a binary file read in parts, under the read rule (no size cap:
        it is streamed, not held)."""
        try:
            if isinstance(self.file, str):
                return remote.open_object(self.file)
            return open_regular(self.file, max_bytes=None)
        except (DecodeError, remote.RemoteError) as exc:
            raise ConfigError(f"source.file {as_text(self.file)}: {exc}") from None

    def _entries(self) -> Iterator[pa.Array]:
        """The listed names, as text (`names.as_text`), in batches; empty ones left out."""
        if self.suffix == ".txt":
            text = self._whole().decode("utf-8", "surrogateescape")  # old systems' bytes stay
            lines = [as_text(line.strip()) for line in text.splitlines() if line.strip()]
            for start in range(0, len(lines), BATCH_ROWS):
                yield pa.array(lines[start:start + BATCH_ROWS], pa.string())
            return
        with self._open() as handle:
            batches = self._parquet(handle) if self.suffix == ".parquet" else self._csv(handle)
            for names in batches:
                yield _as_text_array(names)

    def _whole(self) -> bytes:
        if isinstance(self.file, str):
            return read_remote(self.file)
        return read_input(self.file, "source.file")

    def _parquet(self, handle) -> Iterator[pa.Array]:
        import pyarrow.parquet as pq

        try:
            manifest = pq.ParquetFile(handle)
            column = self._column(manifest.schema_arrow.names)
            for batch in manifest.iter_batches(batch_size=BATCH_ROWS, columns=[column]):
                yield batch.column(0).drop_null()
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"source.file: {as_text(self.file)} is not a readable parquet "
                              f"manifest ({type(exc).__name__}: {exc})") from None

    def _csv(self, handle) -> Iterator[pa.Array]:
        import pyarrow.csv as pacsv

        try:
            header = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=1 << 16))
            column = self._column(header.schema.names)
            handle.seek(0)
            reader = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=16 << 20),
                                    convert_options=pacsv.ConvertOptions(
                                        include_columns=[column],
                                        column_types={column: pa.binary()},
                                        strings_can_be_null=False))
            for batch in reader:
                yield batch.column(0)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"source.file: {as_text(self.file)} is not a readable CSV "
                              f"manifest ({type(exc).__name__}: {exc})") from None

    def _column(self, names: list[str]) -> str:
        if self.column in names:
            return self.column
        if self.column == "path" and "url" in names:
            return "url"
        raise ConfigError(f"source.column: {as_text(self.file)} has no column {self.column!r}")

    def batches(self, rows: int = BATCH_ROWS):
        import pyarrow.compute as pc

        root = self.root if isinstance(self.root, str) else as_text(self.root)
        pending: list[pa.Array] = []
        for names in self._entries():
            names = names.filter(pc.not_equal(pc.utf8_length(names), 0))
            # What os.path.join does: an absolute name (or a URL) stays, the rest go under root
            kept = pc.match_substring_regex(names, _REMOTE_URL)
            if isinstance(self.root, Path):
                kept = pc.or_(kept, pc.starts_with(names, "/"))
            joined = pc.binary_join_element_wise(root, names, "/")
            paths = pc.if_else(kept, names, joined)
            pending.append(pa.table([names, paths, paths, pa.nulls(len(names), pa.string())],
                                    schema=ITEM_SCHEMA))
            if sum(t.num_rows for t in pending) >= rows:
                yield from _rechunk(pending, rows)
        yield from _rechunk(pending, rows, final=True)

    def items(self):
        for table in self.batches():
            for row in table.to_pylist():
                yield SourceItem.from_row(row)

    def read(self, locator: str) -> bytes:
        if remote.is_remote(locator):
            if isinstance(self.root, str) and locator.startswith(self.root + "/") and \
                    remote.join(self.root, locator[len(self.root) + 1:]) is None:
                raise DecodeError(f"outside the source root {self.root}")
            return read_bytes(locator)
        if isinstance(self.root, str):
            raise DecodeError(f"a local name in a manifest of remote objects ({self.root})")
        return read_bytes(inside(self.root, locator))


_REMOTE_URL = "^(?i)(" + "|".join(remote.REMOTE_PROTOCOLS) + ")://"


def _as_text_array(names: pa.Array) -> pa.Array:
    """`names.as_text` over an Arrow column of names: UTF-8 ones in Arrow (a backslash
    doubled), the rest (bytes from an old system) one by one."""
    import pyarrow.compute as pc

    if pa.types.is_binary(names.type) or pa.types.is_large_binary(names.type):
        try:
            names = names.cast(pa.string())
        except pa.ArrowInvalid:  # not UTF-8
            return pa.array([as_text(name) for name in names.to_pylist()], pa.string())
    names = names.cast(pa.string())
    return pc.replace_substring(names, "\\", "\\\\")


def _rechunk(tables: list[pa.Table], rows: int, final: bool = False) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows cut from the front of `tables` (consumed in place); the
    remainder stays, or (final) comes last."""
    table = pa.concat_tables(tables) if tables else None
    tables.clear()
    if table is None:
        return
    start = 0
    while table.num_rows - start >= rows:
        yield table.slice(start, rows)
        start += rows
    if start < table.num_rows:
        if final:
            yield table.slice(start)
        else:
            tables.append(table.slice(start))


class CocoSource(Source):
    kind = "coco"
    path_options = ("annotations", "images")

    def __init__(self, annotations: str, images: str, name: str | None = None):
        super().__init__(name)
        self.annotations, self.images = Path(annotations).expanduser().resolve(), Path(images).expanduser().resolve()

    def items(self):
        for image in sorted(coco_images(self.annotations), key=lambda entry: entry["id"]):
            path = as_text(os.path.join(self.images, image["file_name"]))
            yield SourceItem(str(image["id"]), path, path)

    def read(self, locator: str) -> bytes:
        return read_bytes(inside(self.images, locator))


def coco_images(annotations: Path) -> list[dict]:
    """The `images` list of a COCO annotations file, each with an `id` (all integers or all
    strings) and a `file_name`; anything else is a one-line ConfigError naming the entry."""
    where = f"source.annotations: {as_text(annotations)}"
    try:
        document = json.loads(read_input(annotations, "source.annotations"))
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be COCO annotations") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{where}: not valid JSON (truncated?): {exc}") from None
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise ConfigError(f"{where}: has no 'images' list (got {type(images).__name__})")
    for position, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str) \
                or not image["file_name"]:
            raise ConfigError(f"{where}: images[{position}] has no file_name")
        if type(image.get("id")) not in (int, str):
            raise ConfigError(f"{where}: images[{position}] has no integer or string id")
    if len({type(image["id"]) for image in images}) > 1:
        raise ConfigError(f"{where}: image ids mix integers and strings; use one type")
    return images


class ImageNetSource(FolderSource):
    """Class folders (`train/n01440764/x.JPEG`) or a flat val folder: both are folders of
    images, so enumeration is the folder source's; the key keeps the wnid prefix."""

    kind = "imagenet"


class WebDatasetSource(Source):
    """img2dataset output: tar shards holding `key.jpg` (+ `key.json`, `key.txt`).

    Members are indexed once (name, offset, size), so workers read an image with one seek
    (on remote storage: one range read).
    A shard is read in place, never extracted; a member named like an image that is not a
    regular file (a link, a device) or whose name leaves the archive's folder is that
    input's error row. A truncated shard is refused whole: its input list would change.
    """

    kind = "webdataset"
    path_options = ("shards",)

    def __init__(self, shards: str, name: str | None = None):
        super().__init__(name)
        if remote.is_remote(shards):
            self.tars = _remote_tars(shards)
        else:
            pattern = Path(shards).expanduser().resolve()
            self.tars = sorted(pattern.parent.glob(pattern.name)) if "*" in pattern.name else (
                sorted(pattern.glob("*.tar")) if pattern.is_dir() else [pattern])
        if not self.tars:
            raise ConfigError(f"source.shards: no .tar files match {shards}")

    def items(self):
        for tar_path in self.tars:
            yield from self._members(tar_path)

    def _members(self, tar_path: Path | str) -> list[SourceItem]:
        where = f"source.shards: {as_text(tar_path)}"
        try:
            handle = (remote.open_object(tar_path) if isinstance(tar_path, str)
                      else open_regular(tar_path, max_bytes=None))
        except (DecodeError, remote.RemoteError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        found: list[SourceItem] = []
        stem = posixpath.splitext(posixpath.basename(str(tar_path)))[0]
        with handle:
            size = handle.size if isinstance(tar_path, str) else os.fstat(handle.fileno()).st_size
            try:
                with tarfile.open(fileobj=handle, mode="r:") as archive:
                    for member in archive:
                        if Path(member.name).suffix.lower() not in IMAGE_EXTENSIONS:
                            continue
                        if member.offset_data + member.size > size:
                            raise tarfile.ReadError(f"{member.name} ends past the end of the file")
                        key = f"{stem}/{Path(member.name).stem}"
                        locator = f"{as_text(tar_path)}::{member.offset_data}::{member.size}"
                        found.append(SourceItem(as_text(key), as_text(f"{tar_path}::{member.name}"),
                                                locator, _refused_member(member)))
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ConfigError(f"{where}: truncated or not an uncompressed tar "
                                  f"({type(exc).__name__}: {exc}) after {len(found)} images; "
                                  "fetch it again") from None
        return found

    def read(self, locator: str) -> bytes:
        tar_path, offset, size = locator.rsplit("::", 2)
        if remote.is_remote(tar_path):
            return read_remote(tar_path, offset=int(offset), size=int(size))
        if int(size) > MAX_FILE_BYTES:
            raise DecodeError(f"too large: {size} bytes > {MAX_FILE_BYTES} (max_bytes)")
        with open_regular(as_path(tar_path), max_bytes=None) as handle:
            handle.seek(int(offset))
            data = handle.read(int(size))
        if len(data) != int(size):
            raise DecodeError(f"truncated tar member: {len(data)} of {size} bytes")
        return data


def _remote_tars(shards: str) -> list[str]:
    """The tar shards a remote folder, glob or object names."""
    try:
        if "*" in shards:
            fs, path = remote.filesystem(shards)
            return sorted(fs.unstrip_protocol(name) for name in fs.glob(path))
        if shards.lower().endswith(".tar"):
            return [shards]
        return remote.find_files(shards, (".tar",))
    except (remote.RemoteError, OSError) as exc:
        raise ConfigError(f"source.shards: {exc}") from None


def _refused_member(member: tarfile.TarInfo) -> str | None:
    if not member.isfile():
        kinds = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
                 tarfile.DIRTYPE: "a directory", tarfile.FIFOTYPE: "a FIFO",
                 tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device"}
        return f"tar member is {kinds.get(member.type, 'not a regular file')}, not a regular file"
    if member.name.startswith("/") or ".." in Path(member.name).parts:
        return "tar member's name leaves the archive's folder"
    if member.size > MAX_FILE_BYTES:
        return f"too large: {member.size} bytes > {MAX_FILE_BYTES} (max_bytes)"
    return None


class HFSource(Source):
    """A Hugging Face `datasets` dataset with an image column, read as raw bytes.

    `data` is a local parquet/arrow file or glob, a folder saved with `save_to_disk`, an
    imagefolder, or a hub name. By default the dataset is prepared (a hub one downloaded into
    the datasets cache); with `streaming: true` nothing is downloaded ahead: the listing
    streams the rows once, and a shard's rows stream again when it is labeled (a cursor that
    moves forward, so a shard costs one pass over its rows, not one per image).
    """

    kind = "hf"
    path_options = ("data",)

    def __init__(self, data: str, split: str = "train", image_column: str = "image",
                 streaming: bool = False, name: str | None = None):
        super().__init__(name)
        self.data, self.split, self.image_column = data, split, image_column
        self.streaming = streaming
        self._dataset = None
        self._cursor = None

    def __getstate__(self):  # each worker reopens (memory-mapped, or its own stream)
        return {**self.__dict__, "_dataset": None, "_cursor": None}

    def dataset(self):
        if self._dataset is None:
            import datasets

            path = Path(self.data)
            stream = {"streaming": True} if self.streaming else {}
            if not remote.is_remote(self.data) and path.is_dir() and \
                    (path / "dataset_info.json").exists():
                loaded = datasets.load_from_disk(str(path))  # memory-mapped: nothing to stream
                loaded = loaded[self.split] if isinstance(loaded, datasets.DatasetDict) else loaded
            elif not remote.is_remote(self.data) and path.is_dir():
                loaded = datasets.load_dataset("imagefolder", data_dir=str(path),
                                               split=self.split, **stream)
            elif path.suffix in (".parquet", ".arrow") or "*" in path.name:
                builder = "arrow" if path.suffix == ".arrow" else "parquet"
                loaded = datasets.load_dataset(builder, data_files=self.data, split="train",
                                               **stream)
            else:
                loaded = datasets.load_dataset(self.data, split=self.split, **stream)
            if self.image_column not in loaded.column_names:
                raise ConfigError(f"source.image_column: {self.data} has no column "
                                  f"{self.image_column!r} (has {loaded.column_names})")
            self._dataset = loaded.cast_column(self.image_column, datasets.Image(decode=False))
        return self._dataset

    def items(self):
        for index, row in enumerate(self.dataset()):
            cell = row[self.image_column]
            shown = (cell or {}).get("path") or f"{self.data}#{index}"
            yield SourceItem(str(index), as_text(shown), str(index))

    def read(self, locator: str) -> bytes:
        import datasets

        if isinstance(self.dataset(), datasets.IterableDataset):
            if self._cursor is None:
                self._cursor = StreamCursor(lambda start: iter(self.dataset().skip(start)))
            row = self._cursor.row(int(locator))
        else:
            row = self.dataset()[int(locator)]
        cell = row[self.image_column]
        if cell.get("bytes"):
            return cell["bytes"]
        return read_bytes(cell["path"])


class StreamCursor:
    """Rows of a stream by index, for readers that go forward: a shard's rows in order, a
    few decode threads ahead of or behind each other. Rows within `window` behind the
    furthest read are kept; a read before them, or far ahead, restarts the stream there."""

    def __init__(self, open_at, window: int = 256):
        self.open_at, self.window = open_at, window
        self.lock = threading.Lock()
        self.rows: Iterator | None = None
        self.next = 0
        self.recent: OrderedDict[int, dict] = OrderedDict()
        self.restarts = 0

    def row(self, index: int) -> dict:
        with self.lock:
            if index in self.recent:
                return self.recent[index]
            if self.rows is None or index < self.next or index > self.next + self.window:
                self.rows, self.next = self.open_at(index), index
                self.restarts += 1
            while self.next <= index:
                row = next(self.rows, None)
                if row is None:
                    raise DecodeError(f"row {index} is past the end of the stream")
                self.recent[self.next] = row
                self.next += 1
                while len(self.recent) > self.window:
                    self.recent.popitem(last=False)
            return self.recent[index]


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


def absolute_source(config: dict) -> dict:
    """`config` with its local paths absolute, so that `--source photos` and `--source
    ~/photos` name one source (a hub dataset's name stays as it is)."""
    kind = SOURCES.get(config.get("kind"))
    absolute = dict(config)
    for key in kind.path_options if kind else ():
        value = absolute.get(key)
        if isinstance(value, str) and value and not remote.is_remote(value):
            local = os.path.expanduser(value)
            if key != "data" or os.path.exists(local) or glob.glob(local):
                absolute[key] = os.path.abspath(local)
    return absolute


def guess_source(path: str) -> dict:
    """The source config for a bare `--source PATH` (or URL), its path absolute."""
    if remote.is_remote(path):
        return _guess_remote(path)
    path = os.path.abspath(os.path.expanduser(path))
    target = Path(path)
    if target.suffix.lower() == ".parquet" and _is_manifest(path):
        return {"kind": "filelist", "file": path}
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


def _is_manifest(parquet: str) -> bool:
    """A parquet of names (a `path` or `url` column, no `image`) rather than of images."""
    import pyarrow.parquet as pq

    try:
        with (remote.open_object(parquet) if remote.is_remote(parquet)
              else open_regular(parquet, max_bytes=None)) as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except (DecodeError, remote.RemoteError, pa.ArrowException, OSError):
        return False  # the hf source reports what is wrong with it
    return "image" not in names and bool({"path", "url"} & set(names))


def _guess_remote(url: str) -> dict:
    suffix = posixpath.splitext(url.rstrip("/"))[1].lower()
    if suffix in (".txt", ".csv") or (suffix == ".parquet" and _is_manifest(url)):
        return {"kind": "filelist", "file": url}
    if suffix == ".parquet":
        return {"kind": "hf", "data": url, "streaming": True}
    if suffix == ".tar" or "*" in url:
        return {"kind": "webdataset", "shards": url}
    try:
        tars = remote.find_files(url, (".tar",))
    except remote.RemoteError as exc:
        raise ConfigError(f"--source {url}: {exc}") from None
    return {"kind": "webdataset", "shards": url} if tars else {"kind": "folder", "root": url}


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

