"""A run folder whose durable copy is on object storage (`--out s3://bucket/run`): a local
*staging* folder that is a real run folder, pulled from and pushed to the remote prefix.

Everything that labels, fuses or reads a run works on the local staging folder through
`run_folder` as it does on any run; this module only moves whole files between it and the
remote prefix. An object PUT is atomic (it exists whole or not at all), so the run folder's
rule carries over: a shard is done when its labels object exists, and shards are pushed
embeddings → errors → labels; the manifest is pushed last (the run is complete).

What the staging folder holds of the remote is recorded beside each file, under the hidden
`.remote/` folder: the object's size and ETag when it was pulled or pushed, and the local
file's size, mtime and sha256 then. A file whose record still matches both sides is not moved
again (a mirror re-pulls only what changed); a file written locally since with other bytes
(a shard labeled, a fused rewrite) is what `push_changed` sends. Hidden names are not run files, so
`run_folder.refuse_unless_empty` and the shard listing ignore `.remote/`.

Lease files are not moved: they need an exclusive create and a heartbeat (an mtime touch)
that object storage does not give, so processes labeling one remote run must not share
shards through leases: one process, or Ray tasks (the Ray scheduler hands each shard out
once); torchrun with a remote `--out` is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from distill import remote, run_folder
from distill.errors import DistillError, first_line
from distill.safefs import atomic_write, cache_folder, sha256_file

STATE_DIR = ".remote"  # hidden: not a run file
URL_FILE = "url"


def normal_url(url: str) -> str:
    return str(url).rstrip("/")


def default_staging(url: str, purpose: str = "runs") -> Path:
    """Where a remote run is staged (`runs`) unless `--staging` says, or mirrored for the
    stages that read it (`mirrors`: apart, so a reader never prunes a labeler's staged shard
    before its push): a folder under the user's cache named from the URL's hash."""
    return cache_folder(purpose, hashlib.sha256(normal_url(url).encode()).hexdigest()[:16])


def staging_folder(url: str, staging: str | Path | None = None) -> Path:
    """The local folder that stages `url`: `staging`, or `default_staging`."""
    return Path(staging).expanduser().absolute() if staging else default_staging(url)


def claim_staging(url: str, staging: str | Path | None = None) -> Path:
    """`staging_folder`, checked: a new or empty folder becomes `url`'s; one that stages
    another URL, or holds other files, is refused."""
    url = normal_url(url)
    folder = staging_folder(url, staging)
    marker = folder / STATE_DIR / URL_FILE
    if not marker.exists():
        try:
            run_folder.refuse_unless_empty(folder, "--staging")
        except DistillError:
            if not marker.exists():  # else another process (a rank, a worker) claimed it
                raise
        else:
            with atomic_write(marker) as partial:
                partial.write_text(url + "\n")
    held = marker.read_text().strip()
    if held != url:
        raise DistillError(f"--staging {folder} stages {held}, not {url}: choose another "
                           "--staging folder (or leave it out)")
    return folder


def _fs(url: str):
    try:
        return remote.filesystem(url)
    except remote.RemoteError as exc:
        raise DistillError(f"{url}: {exc}") from None


def _failure(url: str, exc: BaseException) -> DistillError:
    """One line for a remote that refused: credentials, a missing bucket, the network."""
    if isinstance(exc, PermissionError):
        why = "access denied (check the credentials: AWS_PROFILE, AWS_ACCESS_KEY_ID, …)"
    elif isinstance(exc, FileNotFoundError):
        why = f"not found ({exc})"
    else:
        first = first_line(exc, default="")
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return DistillError(f"{url}: {why}")


def check_bucket(url: str) -> None:
    """A bucket that does not exist (or that these credentials cannot see) is one line now,
    not an error after the inputs were listed."""
    if not remote.holds_runs(url):
        return
    fs, path = _fs(url)
    bucket = path.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except Exception as exc:  # noqa: BLE001 - botocore's errors are many; each is one line
        raise _failure(url, exc) from None
    if not found:
        raise DistillError(f"{url}: bucket {bucket} does not exist (or these credentials "
                           "cannot see it)")


def _stamp(info: dict) -> list:
    """What tells one version of an object from another: size and ETag (or what the
    protocol has in its place)."""
    tag = next((info[k] for k in ("ETag", "etag", "md5Hash", "LastModified", "mtime",
                                  "last_modified") if info.get(k) is not None), None)
    return [info.get("size"), str(tag) if tag is not None else None]


def _record_path(staging: Path, name: str) -> Path:
    return staging / STATE_DIR / "objects" / f"{name}.json"


def _record(staging: Path, name: str, info: dict | None = None, stamp: list | None = None,
            digest: str | None = None) -> None:
    """What the staged file `name` and its object are now (the object: `info`, or its
    `stamp` as recorded), with the file's sha256 (`digest`, if known)."""
    local = (staging / name).stat()
    with atomic_write(_record_path(staging, name)) as partial:
        partial.write_text(json.dumps({
            "remote": _stamp(info) if info is not None else stamp,
            "local": [local.st_size, local.st_mtime_ns],
            "sha256": digest or sha256_file(staging / name)}))


def _recorded(staging: Path, name: str) -> dict | None:
    try:
        return json.loads(_record_path(staging, name).read_text())
    except (OSError, ValueError):
        return None


def _unchanged_locally(staging: Path, name: str, record: dict | None) -> bool:
    try:
        local = (staging / name).stat()
    except FileNotFoundError:
        return False
    return record is not None and record.get("local") == [local.st_size, local.st_mtime_ns]


def _fresh(staging: Path, name: str, info: dict) -> bool:
    """Whether the staged file is still the object `info` describes."""
    record = _recorded(staging, name)
    return (record is not None and record.get("remote") == _stamp(info)
            and _unchanged_locally(staging, name, record))


def list_objects(url: str) -> dict[str, dict]:
    """name within the run (`shards/labels-00000.parquet`) → its info, for every object
    under the prefix `url` (hidden names left out)."""
    fs, root = _fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # other processes push: never answer from an old listing
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001
        raise _failure(url, exc) from None
    objects = {}
    for path, info in found.items():
        name = path[len(root) + 1:] if path.startswith(root + "/") else None
        if name and info.get("type", "file") == "file" and _plain(name):
            objects[name] = info
    return objects


def _plain(name: str) -> bool:
    """Whether an object's name within the run is one a staging folder may hold: relative,
    no empty, hidden, "." or ".." part. An object key is any text: `run//etc/x` would name
    `/etc/x`, and `staging / "/etc/x"` is `/etc/x` (a bucket others write to must not reach
    outside the folder)."""
    return all(part and not part.startswith(".") for part in name.split("/"))


def _infos(url: str, names: Iterable[str]) -> dict[str, dict]:
    fs, root = _fs(url)
    found = {}
    for name in names:
        path = f"{root.rstrip('/')}/{name}"
        fs.invalidate_cache(path)
        try:
            found[name] = fs.info(path)
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise _failure(f"{normal_url(url)}/{name}", exc) from None
    return found


# The run's own files (`run_folder`'s names): a pull makes them the remote's, whatever was
# written here. Anything else in the folder (a review queue a person is filling in, a
# calibrated fusion YAML) is theirs: never overwritten while changed here, never removed;
# `push_changed` sends it up with what the command wrote.
OWN_FILES = {run_folder.INPUTS_FILE, run_folder.RUN_FILE, run_folder.MANIFEST_FILE,
             run_folder.ERRORS_FILE, run_folder.HUMAN_FILE, run_folder.DEDUP_FILE,
             run_folder.DEDUP_SUMMARY, run_folder.DEDUP_PAIRS, run_folder.SHARD_DIR}


def _own(name: str) -> bool:
    return name.split("/", 1)[0] in OWN_FILES


def _edited_here(staging: Path, name: str) -> bool:
    """Whether the staged file `name` holds bytes that no pull or push recorded."""
    path = staging / name
    if not path.is_file():
        return False
    record = _recorded(staging, name)
    return record is None or (not _unchanged_locally(staging, name, record)
                              and record.get("sha256") != sha256_file(path))


def pull(url: str, staging: Path, names: Iterable[str] | None = None, *,
         prune: bool = False, objects: dict[str, dict] | None = None) -> dict[str, dict]:
    """Make the staged copies of the run's objects (`names`, or every object under `url`;
    `objects`: that listing, already made) those of the remote, pulling only the ones that
    changed (by size and ETag, or a run file changed here since; `OWN_FILES`). `prune`:
    staged run files the remote does not hold are removed (a shard written here whose push
    never finished is labeled again). Returns the objects."""
    staging = Path(staging)
    if objects is None:
        objects = list_objects(url) if names is None else _infos(url, names)
    fs, root = _fs(url)
    for name, info in objects.items():
        if not _plain(name):
            raise DistillError(f"{normal_url(url)}/{name}: a name that leaves the run folder")
        if _fresh(staging, name, info) or (not _own(name) and _edited_here(staging, name)):
            continue
        target = staging / name
        try:
            with atomic_write(target) as partial:
                fs.get_file(f"{root.rstrip('/')}/{name}", str(partial))
                _date(partial, info)
        except FileNotFoundError:
            continue  # deleted since it was listed: as if never listed
        except Exception as exc:  # noqa: BLE001
            raise _failure(f"{normal_url(url)}/{name}", exc) from None
        if info.get("size") is not None and target.stat().st_size != info["size"]:
            target.unlink()
            raise DistillError(f"{normal_url(url)}/{name} changed while being pulled: run again")
        _record(staging, name, info)
    if prune:
        for path in _run_files(staging):
            name = path.relative_to(staging).as_posix()
            if name not in objects and _own(name):
                path.unlink()
                _record_path(staging, name).unlink(missing_ok=True)
    return objects


def _date(path: Path, info: dict) -> None:
    """A pulled file gets its object's time, as a local copy keeps its file's: "written after
    the shards" (`claims._finalized_since`) reads the same on the staged copy."""
    when = info.get("LastModified") or info.get("mtime") or info.get("updated")
    stamp = when.timestamp() if hasattr(when, "timestamp") else when
    if isinstance(stamp, int | float):
        os.utime(path, (stamp, stamp))


def _run_files(staging: Path) -> list[Path]:
    """The staged run's files: every file whose path has no hidden part."""
    return [path for path in staging.rglob("*") if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(staging).parts)]


def push(url: str, staging: Path, names: Iterable[str]) -> None:
    """Upload the staged files `names`, in this order (each PUT is atomic: a later name
    exists remotely only once the earlier ones do)."""
    fs, root = _fs(url)
    for name in names:
        path = f"{root.rstrip('/')}/{name}"
        try:
            fs.put_file(str(Path(staging) / name), path)
            fs.invalidate_cache(path)
            info = fs.info(path)
        except Exception as exc:  # noqa: BLE001
            raise _failure(f"{normal_url(url)}/{name}", exc) from None
        _record(Path(staging), name, info)


def _shard_names(index: int) -> list[str]:
    """Shard `index`'s objects, the labels object (its completion mark) last."""
    return [f"{run_folder.SHARD_DIR}/{run_folder.shard_name('embeddings', index, 'npy')}",
            f"{run_folder.SHARD_DIR}/{run_folder.shard_name('errors', index)}",
            f"{run_folder.SHARD_DIR}/{run_folder.shard_name('labels', index)}"]


def push_shard(url: str, staging: Path, index: int) -> None:
    """Shard `index`'s files, the labels object last: once it exists the shard is done. An
    embeddings object an earlier attempt pushed goes when this one wrote none."""
    names = _shard_names(index)
    if not (Path(staging) / names[0]).exists():
        _remove(url, names[0])
    push(url, staging, [name for name in names if (Path(staging) / name).exists()])


def shard_done(url: str, staging: Path, index: int) -> bool:
    """Whether shard `index` is done: its labels object exists (then its objects are staged
    here, pulled if they changed). Otherwise what this folder stages of it (a shard written
    here whose push never finished, or one of an earlier run at this URL) is removed, to be
    labeled again: the remote, not a staging folder, says what is done."""
    staging = Path(staging)
    names = _shard_names(index)
    objects = _infos(url, names)
    if names[-1] in objects:
        pull(url, staging, objects=objects)
        return True
    for name in names:
        (staging / name).unlink(missing_ok=True)
        _record_path(staging, name).unlink(missing_ok=True)
    return False


def changed(staging: Path, names: Iterable[str] | None = None) -> list[str]:
    """The staged run files (of `names`, in that order; else all, sorted) written here since
    they were last pulled or pushed. A file rewritten with the bytes it had (a rerun's fusion
    of an already fused shard) is not: its record is brought up to date instead, and nothing
    is sent again."""
    staging, found = Path(staging), []
    paths = (_run_files(staging) if names is None else
             [staging / name for name in names if (staging / name).is_file()])
    for path in paths:
        name = path.relative_to(staging).as_posix()
        record = _recorded(staging, name)
        if _unchanged_locally(staging, name, record):
            continue
        digest = sha256_file(path) if record is not None else None
        if record is not None and record.get("sha256") == digest:
            _record(staging, name, stamp=record.get("remote"), digest=digest)
        else:
            found.append(name)
    return sorted(found) if names is None else found  # the order asked for


def push_changed(url: str, staging: Path) -> list[str]:
    """Push every staged file written since it was last pulled or pushed; manifest.json
    last (a remote manifest says the run is complete, so it follows what it describes)."""
    names = changed(staging)
    names.sort(key=lambda name: name == run_folder.MANIFEST_FILE)
    if names[-1:] == [run_folder.MANIFEST_FILE] and len(names) > 1:
        # The run changes under its manifest (`fuse` rewrites every shard): the old one goes
        # first, so a push cut short leaves a run readers call half-written, never a complete
        # one of mixed shards.
        _remove(url, run_folder.MANIFEST_FILE)
    push(url, staging, names)
    return names


def _remove(url: str, name: str) -> None:
    fs, root = _fs(url)
    path = f"{root.rstrip('/')}/{name}"
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise _failure(f"{normal_url(url)}/{name}", exc) from None
    fs.invalidate_cache(path)


def start_labeling(url: str, staging: str | Path | None) -> Path:
    """The staging folder of a `distill label --out URL` about to start or resume: the
    remote's run files pulled into it (a shard on the remote counts as done), anything it
    held that the remote does not removed. A remote prefix of other files is refused."""
    url = normal_url(url)
    objects = list_objects(url)  # credentials refused: "access denied", here
    if not objects:
        check_bucket(url)
    folder = claim_staging(url, staging)
    if objects and not ({run_folder.RUN_FILE, run_folder.INPUTS_FILE} & objects.keys()):
        raise DistillError(f"--out {url} is not empty ({len(objects)} objects, e.g. "
                           f"{min(objects)}): choose a new or empty prefix")
    pull(url, folder, prune=True, objects=objects)
    return folder


def mirror(url: str, folder: str | Path | None = None) -> Path:
    """A remote run as a local run folder, for the stages that read one: pulled into
    `folder` (default: the cache's `mirrors`), only what changed since the last mirror, and
    whatever it held that the remote does not removed; returns it."""
    url = normal_url(url)
    objects = list_objects(url)
    if not objects:
        check_bucket(url)
        raise DistillError(f"{url}: no run there (no objects under that prefix)")
    folder = claim_staging(url, folder or default_staging(url, "mirrors"))
    pull(url, folder, prune=True, objects=objects)
    return folder
