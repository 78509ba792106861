"""Shared fixtures: real photos that installed packages ship, and an isolated weights folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CALIBRATION_IMAGES = ("I03", "I04", "I06", "I08", "I19")


def _site_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def calibration_dir() -> Path:
    """pyiqa's wheel ships its calibration images beside the package."""
    folder = _site_dir("pyiqa").parent / "ResultsCalibra" / "dist_dir"
    assert folder.is_dir(), f"pyiqa's ResultsCalibra images are missing from {folder}"
    return folder


@pytest.fixture(scope="session")
def skimage_photos() -> dict[str, Path]:
    data = _site_dir("skimage") / "data"
    names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
    return {Path(n).stem: data / n for n in names}


class HttpFolder:
    """A folder served over http on 127.0.0.1 by werkzeug (moto[server]'s, so in `.[dev]`),
    logging every request as (method, path, Range header) and counting the body bytes it
    handed to the socket (`sent`). `ranges=False` answers a range request with the whole
    file (200), as some servers do."""

    def __init__(self, folder: Path):
        import threading

        from werkzeug.serving import make_server

        self.folder, self.ranges, self.requests, self.sent = folder, True, [], 0
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def _app(self, environ, start_response):
        from werkzeug.exceptions import NotFound
        from werkzeug.utils import send_file

        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"],
                              environ.get("HTTP_RANGE")))
        if not self.ranges:
            environ = {key: value for key, value in environ.items() if key != "HTTP_RANGE"}
        path = self.folder / environ["PATH_INFO"].lstrip("/")
        response = send_file(path, environ, conditional=True) if path.is_file() else NotFound()
        body = response(environ, start_response)
        try:
            for chunk in body:
                self.sent += len(chunk)
                yield chunk
        finally:
            getattr(body, "close", lambda: None)()

    def count(self, method: str) -> int:
        return sum(request[0] == method for request in self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


@pytest.fixture
def http_folder(tmp_path):
    pytest.importorskip("werkzeug", reason="moto[server] (werkzeug) is not installed")
    (tmp_path / "served").mkdir()
    server = HttpFolder(tmp_path / "served")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_weights(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(autouse=True)
def isolated_weights(session_weights, monkeypatch):
    """Never read or write the user's real weights cache from tests."""
    monkeypatch.setenv("DISTILL_WEIGHTS_DIR", str(session_weights))
    return session_weights


@pytest.fixture(scope="session")
def photo(skimage_photos) -> Image.Image:
    return Image.open(skimage_photos["chelsea"]).convert("RGB")


@pytest.fixture(scope="session")
def student_file(tmp_path_factory) -> Path:
    """A tiny student with random weights at 64 px: real code paths, meaningless scores."""
    import torch

    from students import create_student
    from students.checkpoint import save_student
    from students.preprocess import policy

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_student(path, create_student("tiny").eval(), "tiny", {}, policy(64),
                 {"note": "random, for tests"})
    return path


def rng_image(seed: int, size=(96, 80)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def offline_env(**extra) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **extra)
    return env


def _mount_tmpfs(folder: Path, options: str) -> bool:
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture()
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, options) -> a fresh tmpfs folder (a real other file system: read-only,
    or a few MB to fill up). Needs root, as CI has; unmounted after the test."""
    import subprocess

    mounted = []

    def mount(name: str, options: str = "size=4m") -> Path:
        folder = tmp_path / name
        if not _mount_tmpfs(folder, options):
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill_up(folder: Path) -> None:
    """Write a filler file until the file system holding `folder` has no space left."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


class S3Server:
    """moto's S3 server on 127.0.0.1 (a real HTTP server the code under test talks to), with
    a gate: `hold(fragment)` makes the next PUTs of a key containing `fragment` wait, so a
    test can kill a writer at an exact point; `drop()` then fails them (never stored).
    `puts` lists the paths of the PUTs it answered."""

    def __init__(self):
        import threading

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self._moto = DomainDispatcherApplication(create_backend_app)
        self._held: str | None = None
        self._release = threading.Event()
        self.arrived = threading.Event()
        self.puts: list[str] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _app(self, environ, start_response):
        held = self._held
        if held and environ["REQUEST_METHOD"] == "PUT" and held in environ["PATH_INFO"]:
            self.arrived.set()
            self._release.wait(timeout=300)
            start_response("503 Slow Down", [("Content-Length", "0")])
            return [b""]
        if environ["REQUEST_METHOD"] == "PUT":
            self.puts.append(environ["PATH_INFO"])
        return self._moto(environ, start_response)

    def hold(self, fragment: str) -> None:
        self._release.clear()
        self.arrived.clear()
        self._held = fragment

    def drop(self) -> None:
        self._held = None
        self._release.set()

    def stop(self) -> None:
        self.drop()
        self._server.shutdown()
        self._thread.join()


@pytest.fixture(scope="session")
def s3_server():
    """One S3 server per test process (s3fs keeps its clients per endpoint for the process,
    so every module talks to the same one); the credentials and endpoint are in the
    environment, which labeling subprocesses inherit."""
    pytest.importorskip("s3fs", reason="the [s3] extra (s3fs) is not installed")
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    server = S3Server()
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": server.endpoint}.items():
            env.setenv(key, value)
        yield server
    server.stop()


def s3_filesystem():
    """An s3fs client of its own (not the cached one the code under test uses)."""
    import fsspec

    return fsspec.filesystem("s3", skip_instance_cache=True)
