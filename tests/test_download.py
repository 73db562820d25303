"""wattcast.download against a local HTTP server (no internet needed)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import REPO

from wattcast.data import DataError, read_meter_file, sample_path
from wattcast.download import ARCHIVE_NAME, DEFAULT_SHA256, DEFAULT_URL, default_cache_dir, download_dataset


def _uci_text(rows: int = 50) -> bytes:
    with gzip.open(sample_path(), "rb") as fh:
        return b"".join(fh.readline() for _ in range(rows + 1))


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


TEXT = _uci_text()
SHA = hashlib.sha256(TEXT).hexdigest()
WRONG_SHA = "0" * 64


class Server(SimpleNamespace):
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


@pytest.fixture
def server(tmp_path):
    """A local HTTP server with a few archives and misbehaving paths; counts GET requests per path."""
    files = {
        "/uci.zip": _zip_bytes({"household_power_consumption.txt": TEXT}),
        "/nested.zip": _zip_bytes({"uci/": b"", "uci/household_power_consumption.txt": TEXT}),
        # as zipped by macOS Finder: resource forks in __MACOSX/ (sorted first here)
        "/macos.zip": _zip_bytes(
            {
                "__MACOSX/uci/._household_power_consumption.txt": b"\x00\x05\x16\x07junk",
                "uci/": b"",
                "uci/household_power_consumption.txt": TEXT,
            }
        ),
        # ~3 MB of incompressible padding so that the transfer takes several chunks
        "/big.zip": _zip_bytes(
            {"household_power_consumption.txt": TEXT, "padding.bin": os.urandom(3_000_000)}, zipfile.ZIP_STORED
        ),
        "/other.zip": _zip_bytes({"readme.txt": b"no data here"}),
        "/page.zip": b"<html><body>Maintenance</body></html>",
    }
    hits: Counter[str] = Counter()
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits[self.path] += 1
            if self.path in files:
                body = files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/truncated.zip":
                body = files["/uci.zip"]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            elif self.path == "/no-length.zip":  # no Content-Length: read to the end of the connection
                self.send_response(200)
                self.end_headers()
                self.wfile.write(files["/uci.zip"])
                self.close_connection = True
            elif self.path == "/silent.zip":
                release.wait(10)  # answer nothing until the test is over
            elif self.path == "/error.zip":
                self.send_error(500, "Internal Server Error")
            else:
                self.send_error(404, "Not Found")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Server(port=httpd.server_address[1], hits=hits, files=files)
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _quiet(lines: list[str] | None = None):
    return (lambda line: None) if lines is None else lines.append


def test_download_verifies_and_reads(server, tmp_path):
    cache = tmp_path / "cache"
    path = download_dataset(url=server.url("uci.zip"), cache_dir=cache, sha256=SHA, progress=_quiet())
    assert path == cache / ARCHIVE_NAME and path.is_file()
    assert sorted(p.name for p in cache.iterdir()) == [ARCHIVE_NAME]
    assert path.read_bytes() == server.files["/uci.zip"]
    df = read_meter_file(path)
    assert len(df) == 50 and df.attrs["rows_raw"] == 50
    assert server.hits["/uci.zip"] == 1


def test_second_call_uses_the_cache(server, tmp_path):
    lines: list[str] = []
    first = download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    second = download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet(lines))
    assert first == second
    assert server.hits["/uci.zip"] == 1
    assert any("verified copy" in line for line in lines)


def test_force_downloads_again(server, tmp_path):
    download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, force=True, progress=_quiet())
    assert server.hits["/uci.zip"] == 2


def test_damaged_cached_copy_is_replaced(server, tmp_path):
    (tmp_path / ARCHIVE_NAME).write_bytes(b"PK\x03\x04 not really a zip")
    path = download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    assert server.hits["/uci.zip"] == 1
    assert path.read_bytes() == server.files["/uci.zip"]


def test_cached_copy_of_another_hash_is_replaced(server, tmp_path):
    other = _zip_bytes({"household_power_consumption.txt": _uci_text(10)})
    (tmp_path / ARCHIVE_NAME).write_bytes(other)
    download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    assert server.hits["/uci.zip"] == 1


def test_wrong_sha_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        download_dataset(url=server.url("uci.zip"), cache_dir=cache, sha256=WRONG_SHA, progress=_quiet())
    message = str(info.value)
    assert "\n" not in message
    assert WRONG_SHA in message and SHA in message  # both hashes shown
    assert list(cache.iterdir()) == []


def test_wrong_sha_keeps_a_verified_copy_of_another_hash(server, tmp_path):
    download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    good = (tmp_path / ARCHIVE_NAME).read_bytes()
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        download_dataset(url=server.url("uci.zip"), cache_dir=tmp_path, sha256=WRONG_SHA, progress=_quiet())
    # the failed attempt removed only its own .part file
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE_NAME]
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == good


def test_member_in_a_subfolder(server, tmp_path):
    path = download_dataset(url=server.url("nested.zip"), cache_dir=tmp_path, sha256=SHA.upper(), progress=_quiet())
    assert len(read_meter_file(path)) == 50


def test_macos_zip_is_verified(server, tmp_path):
    # the hash is taken of uci/household_power_consumption.txt, not of the __MACOSX resource fork
    path = download_dataset(url=server.url("macos.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    assert path.is_file()


def test_macos_zip_reads(server, tmp_path):
    path = download_dataset(url=server.url("macos.zip"), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    assert len(read_meter_file(path)) == 50


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("missing.zip", "HTTP 404"),
        ("error.zip", "HTTP 500"),
        ("truncated.zip", "download failed"),
        ("other.zip", "holds no household_power_consumption.txt"),
        ("page.zip", "not a readable zip"),
    ],
)
def test_failures_raise_data_error_and_leave_nothing(server, tmp_path, path, fragment):
    with pytest.raises(DataError) as info:
        download_dataset(url=server.url(path), cache_dir=tmp_path, sha256=SHA, progress=_quiet())
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_no_content_length(server, tmp_path):
    lines: list[str] = []
    path = download_dataset(url=server.url("no-length.zip"), cache_dir=tmp_path, sha256=SHA, progress=lines.append)
    assert path.read_bytes() == server.files["/uci.zip"]
    assert lines


def test_timeout(server, tmp_path):
    with pytest.raises(DataError, match="no answer within 0.5 s|stalled"):
        download_dataset(url=server.url("silent.zip"), cache_dir=tmp_path, sha256=SHA, timeout=0.5, progress=_quiet())
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="download failed"):
        download_dataset(url=f"http://127.0.0.1:{port}/x.zip", cache_dir=tmp_path, sha256=SHA, timeout=5, progress=_quiet())


@pytest.mark.parametrize("url", ["not a url", "ftp2://example.invalid/x.zip"])
def test_bad_url(tmp_path, url):
    with pytest.raises(DataError, match="download failed"):
        download_dataset(url=url, cache_dir=tmp_path, sha256=SHA, progress=_quiet())


def test_bad_sha_argument(tmp_path):
    with pytest.raises(DataError, match="64 hex digits"):
        download_dataset(url="http://127.0.0.1:9/x.zip", cache_dir=tmp_path, sha256="abc", progress=_quiet())


def test_progress_lines(server, tmp_path):
    lines: list[str] = []
    download_dataset(url=server.url("big.zip"), cache_dir=tmp_path, sha256=SHA, progress=lines.append)
    total = len(server.files["/big.zip"])
    assert lines[0].startswith("downloading ") and server.url("big.zip") in lines[0]
    updates = [line for line in lines if " / " in line]
    assert 1 <= len(updates) <= 21  # at most about every 5 %
    assert f"/ {total / 1e6:.1f} MB (100 %)" in updates[-1]
    assert "verified" in lines[-1]


def test_file_url(tmp_path):
    archive = tmp_path / "mirror.zip"
    archive.write_bytes(_zip_bytes({"household_power_consumption.txt": TEXT}))
    path = download_dataset(url=archive.as_uri(), cache_dir=tmp_path / "cache", sha256=SHA, progress=_quiet())
    assert path.read_bytes() == archive.read_bytes()


def test_defaults(monkeypatch, tmp_path):
    assert DEFAULT_SHA256 == "4259c9d7ece5dbee9ab8d53682baac68d791c864f0f64a52b4043cb3b90894b7"
    assert DEFAULT_URL.startswith("https://archive.ics.uci.edu/") and DEFAULT_URL.endswith(".zip")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "wattcast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "wattcast"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "wattcast", "data", "download", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_download(server, tmp_path):
    cache = tmp_path / "cache"
    result = _cli("--url", server.url("uci.zip"), "--cache-dir", str(cache), "--sha256", SHA)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{cache / ARCHIVE_NAME}\n"
    assert "Traceback" not in result.stderr
    assert len(read_meter_file(result.stdout.strip())) == 50
    again = _cli("--url", server.url("uci.zip"), "--cache-dir", str(cache), "--sha256", SHA)
    assert again.returncode == 0 and again.stdout == result.stdout
    assert server.hits["/uci.zip"] == 1


def test_cli_download_errors(server, tmp_path):
    for args, fragment in [
        (("--url", server.url("uci.zip"), "--sha256", WRONG_SHA), "SHA-256 mismatch"),
        (("--url", server.url("missing.zip"), "--sha256", SHA), "HTTP 404"),
    ]:
        result = _cli(*args, "--cache-dir", str(tmp_path))
        assert result.returncode != 0
        assert result.stdout == ""
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("wattcast: error: ")]
        assert len(error_lines) == 1 and fragment in error_lines[0], result.stderr
        assert result.stderr.splitlines()[-1] == error_lines[0]
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# The full data set beside the checkout (../shared/data), as on the developers' machines and in CI.
FULL = Path(
    os.environ.get(
        "WATTCAST_FULL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "household_power_consumption.zip"
    )
)


@pytest.mark.skipif(not FULL.is_file(), reason=f"the full UCI data set is not at {FULL}")
def test_the_real_archive_passes_the_default_hash(tmp_path):
    # from a local mirror (file: URL), with the default expected SHA-256 of the UCI text file
    path = download_dataset(url=FULL.as_uri(), cache_dir=tmp_path, progress=_quiet())
    assert path == tmp_path / ARCHIVE_NAME and path.stat().st_size == FULL.stat().st_size
