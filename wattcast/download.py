"""Fetch the UCI household power data set to a local cache and verify it.

``download_dataset()`` streams the UCI archive (a zip holding
``household_power_consumption.txt``) to ``<cache>/household_power_consumption.zip.part``,
checks the SHA-256 of the text file inside, and only then renames it to
``<cache>/household_power_consumption.zip``.  A verified copy already in the
cache is returned without downloading (unless ``force``).  Every failure
(network, HTTP status, truncated transfer, wrong content) raises
:class:`wattcast.data.DataError` with a one-line message; a failed download
leaves no file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from wattcast import __version__
from wattcast.data import UCI_MEMBER, DataError

DEFAULT_URL = "https://archive.ics.uci.edu/static/public/235/individual+household+electric+power+consumption.zip"
#: SHA-256 of household_power_consumption.txt (132,960,755 bytes) inside the UCI zip
DEFAULT_SHA256 = "4259c9d7ece5dbee9ab8d53682baac68d791c864f0f64a52b4043cb3b90894b7"
ARCHIVE_NAME = "household_power_consumption.zip"

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/wattcast``, or ``~/.cache/wattcast``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "wattcast"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def member_sha256(archive: Path) -> str:
    """SHA-256 (hex) of ``household_power_consumption.txt`` inside the zip ``archive``, streamed."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if PurePosixPath(n).name == UCI_MEMBER and not n.startswith("__MACOSX/")]
            if not names:
                raise DataError(f"{archive}: the zip holds no {UCI_MEMBER}")
            digest = hashlib.sha256()
            with zf.open(min(names, key=len)) as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{archive}: not a readable zip archive: {exc}") from None
    except OSError as exc:
        raise DataError(f"{archive}: cannot read: {exc}") from None


def _fetch(url: str, dest: Path, timeout: float, progress: Callable[[str], None]) -> int:
    """Stream ``url`` into ``dest``; returns the byte count.  Network failures -> DataError."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"wattcast/{__version__} (python urllib)"})
        response = urllib.request.urlopen(request, timeout=timeout)  # http(s), or file: for a local mirror
    except urllib.error.HTTPError as exc:
        raise DataError(f"download failed: HTTP {exc.code} {exc.reason} for {url}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise DataError(f"download failed: no answer within {timeout:g} s from {url}") from None
        raise DataError(f"download failed: {reason} ({url})") from None
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        what = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        raise DataError(f"download failed: {what} ({url})") from None
    except ValueError as exc:  # unknown URL type
        raise DataError(f"download failed: {exc}") from None

    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        progress(f"downloading {url}" + (f" ({_mb(total)})" if total else ""))
        step = max(total // 20, 1) if total else 10 * _CHUNK  # about every 5 %, or every 10 MB
        done, next_report = 0, step
        started = time.monotonic()
        try:
            with dest.open("wb") as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except TimeoutError:
                        raise DataError(f"download failed: stalled for {timeout:g} s after {_mb(done)} ({url})") from None
                    except (http.client.HTTPException, OSError) as exc:
                        raise DataError(
                            f"download failed after {_mb(done)}: {str(exc) or type(exc).__name__} ({url})"
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if done >= next_report or done == total:
                        rate = done / max(time.monotonic() - started, 1e-6)
                        share = f" ({100 * done / total:.0f} %)" if total else ""
                        of = f" / {_mb(total)}" if total else ""
                        progress(f"  {_mb(done)}{of}{share}, {_mb(int(rate))}/s")
                        next_report = done + step
        except OSError as exc:
            raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from None
    if total is not None and done != total:
        raise DataError(f"download failed: got {done} of {total} bytes from {url} (connection cut?)")
    return done


def download_dataset(
    url: str | None = None,
    cache_dir: Path | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60,
    progress: Callable[[str], None] = _to_stderr,
) -> Path:
    """The verified UCI archive in the cache, downloaded first if needed; returns its path.

    ``sha256`` is the expected hash of ``household_power_consumption.txt`` inside
    the zip (default: the UCI file's).  ``timeout`` bounds every network wait
    (connecting, each read), not the whole transfer.  ``progress`` receives
    one-line status messages (default: printed to stderr).
    """
    url = url or DEFAULT_URL
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    expected = (sha256 or DEFAULT_SHA256).strip().lower()
    if not _HEX64.match(expected):
        raise DataError(f"expected SHA-256 must be 64 hex digits, got {sha256!r:.80}")
    final = cache / ARCHIVE_NAME
    part = cache / (ARCHIVE_NAME + ".part")

    if final.is_file() and not force:
        try:
            cached = member_sha256(final)
        except DataError:
            cached = None
        if cached == expected:
            progress(f"using the verified copy in {final}")
            return final
        progress(f"the copy in {final} does not match the expected SHA-256; downloading again")

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache folder {cache}: {exc.strerror or exc}") from None
    try:
        size = _fetch(url, part, timeout, progress)
        got = member_sha256(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if got != expected:
        part.unlink(missing_ok=True)
        raise DataError(f"SHA-256 mismatch of {UCI_MEMBER} from {url}: expected {expected}, got {got}")
    os.replace(part, final)
    progress(f"verified {_mb(size)}: {final}")
    return final
