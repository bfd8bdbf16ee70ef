"""Pinned remote data files (`url` sources): downloaded once into the data cache, verified before
every use, and never used when they do not match their pin.

The data cache is $MEDLLM_HARNESS_DATA_CACHE, else `data/` under the harness cache
($MEDLLM_HARNESS_CACHE, else $XDG_CACHE_HOME/medllm-harness, else ~/.cache/medllm-harness). A file
lives at <cache>/<host>/<path of the URL>, so it can also be put there by hand; it is checked
against its pin (sha256, git blob id, size) on every read, not only after the download. With
HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 nothing is downloaded: a cached, verified file still
works, and a missing one is a one-line error saying how to get it.

The download uses the standard library (`urllib.request`) on purpose: the pin, not the transport,
makes the file trustworthy, and a single streamed GET needs nothing more. `datasets.DownloadManager`
and huggingface_hub's downloader key their caches by URL and ETag rather than content, add a HEAD
request, and fix their offline switches when first imported; this module's cache is keyed by URL and
checked by content, and it honours the offline variables as they are when a split is read.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.spec import UrlSource
from harness.errors import HarnessError

log = logging.getLogger(__name__)

DATA_CACHE_ENV = "MEDLLM_HARNESS_DATA_CACHE"
ALLOW_UNPINNED_ENV = "MEDLLM_HARNESS_ALLOW_UNPINNED"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

ATTEMPTS = 3  # tries of a download that failed in a way that may pass (timeout, HTTP 5xx or 429)
RETRY_DELAY_S = 2.0  # doubled after each failed try
TIMEOUT_S = 60.0  # per socket operation, not for the whole download
_CHUNK = 1 << 20
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def data_cache_dir() -> Path:
    """Where downloaded data files live ($MEDLLM_HARNESS_DATA_CACHE overrides)."""
    env = os.environ.get(DATA_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from harness.backends.models import cache_root

    return cache_root() / "data"


def cache_path(url: str) -> Path:
    """The cached copy of `url`: <cache>/<host[_port]>/<URL path> (a query adds a hash of itself)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "unknown").lower() + (f"_{parts.port}" if parts.port else "")
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
    if not segments or any(s in (".", "..") or os.sep in s or "\0" in s for s in segments):
        raise HarnessError(f"cannot cache {url}: its path does not name a file")
    if parts.query:
        segments[-1] += "." + hashlib.sha256(parts.query.encode()).hexdigest()[:12]
    return data_cache_dir().joinpath(host, *segments)


def _flag(name: str) -> bool:
    """A switch of ours: 1/true/yes/on or 0/false/no/off (or unset); anything else is an error."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HarnessError(f"{name}={os.environ[name]!r}: expected 1 or 0")


def offline() -> bool:
    """Whether downloads are off (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1, as for hub sources; read
    as huggingface_hub reads them: another value is "off")."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_ENVS)


def allow_unpinned_from_env() -> bool:
    """The opt-in for files without a pin: MEDLLM_HARNESS_ALLOW_UNPINNED=1."""
    return _flag(ALLOW_UNPINNED_ENV)


@dataclass(frozen=True)
class Digests:
    sha256: str
    git_blob: str
    size: int


def digests(path: Path) -> Digests:
    """The file's sha256, git blob id (sha1 of "blob SIZE\\0" + content) and size, in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return Digests(sha256.hexdigest(), blob.hexdigest(), size)


def mismatches(src: UrlSource, found: Digests) -> list[str]:
    """What differs from the source's pins ("sha256 expected X, got Y"), empty when all match."""
    out = []
    if src.sha256 is not None and found.sha256 != src.sha256:
        out.append(f"sha256 expected {src.sha256}, got {found.sha256}")
    if src.git_blob is not None and found.git_blob != src.git_blob:
        out.append(f"git blob expected {src.git_blob}, got {found.git_blob}")
    if src.bytes is not None and found.size != src.bytes:
        out.append(f"size expected {src.bytes} bytes, got {found.size}")
    return out


@dataclass(frozen=True)
class VerifiedFile:
    """A cached file that matched its pins (or was accepted unpinned), and how."""

    path: Path
    url: str
    digests: Digests
    verified_by: tuple[str, ...]  # what was checked: "sha256", "git_blob", "bytes"
    pinned: bool  # False: read unverified, with the opt-in

    def record(self) -> dict[str, Any]:
        """What the task's record says about the file: the URL and the digests actually found."""
        out: dict[str, Any] = {"url": self.url, "sha256": self.digests.sha256, "bytes": self.digests.size,
                               "verified_by": list(self.verified_by) if self.pinned else "unpinned (allowed)"}
        if "git_blob" in self.verified_by:
            out["git_blob"] = self.digests.git_blob
        return out


def fetch(src: UrlSource, *, context: str, hint: str, allow_unpinned: bool | None = None) -> VerifiedFile:
    """The verified cached copy of `src.url`, downloaded first when it is not cached.

    `context` names the YAML and key for errors ("task 'x' (tasks/x.yaml: splits.test.url)");
    `hint` says how else to get the file. A file that does not match its pins is never used: a
    fresh download is discarded, a cached copy removed (and downloaded again unless offline).
    A source without a pin is refused unless `allow_unpinned` (default: $MEDLLM_HARNESS_ALLOW_UNPINNED).
    """
    if allow_unpinned is None:
        allow_unpinned = allow_unpinned_from_env()
    if not src.pinned and not allow_unpinned:
        raise HarnessError(
            f"{context}: {src.url} has no pin (sha256: null and no git_blob): refusing unverified data; "
            f"add its sha256, or opt in with `harness run --allow-unpinned` or {ALLOW_UNPINNED_ENV}=1 to read "
            "it unverified"
        )
    path = cache_path(src.url)
    if path.is_file():
        found = digests(path)
        problems = mismatches(src, found)
        if not problems:
            return _accepted(src, path, found)
        path.unlink()
        log.warning("%s: cached %s does not match its pin (%s): removed it", context, path, "; ".join(problems))
        if offline():
            raise HarnessError(
                f"{context}: the cached copy of {src.url} did not match its pin ({'; '.join(problems)}) and was "
                f"removed; downloads are off ({_offline_names()}): {hint}"
            )
    elif offline():
        raise HarnessError(f"{context}: {src.url} is not in the data cache and downloads are off "
                           f"({_offline_names()}): {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        _download(src.url, part, src.bytes, context=context, hint=hint)
        found = digests(part)
        problems = mismatches(src, found)
        if problems:
            raise HarnessError(f"{context}: {src.url} does not match its pin: {'; '.join(problems)}; "
                               "the download was discarded, not used")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    log.info("%s: downloaded %s (%d bytes) to %s", context, src.url, found.size, path)
    return _accepted(src, path, found)


def _accepted(src: UrlSource, path: Path, found: Digests) -> VerifiedFile:
    pins = tuple(name for name in ("sha256", "git_blob", "bytes") if getattr(src, name) is not None)
    if not src.pinned:  # reached only with the opt-in
        log.warning("%s is not pinned; read unverified (%s=1): sha256 %s, %d bytes; pin it with `sha256: %s`",
                    src.url, ALLOW_UNPINNED_ENV, found.sha256, found.size, found.sha256)
    return VerifiedFile(path, src.url, found, pins, src.pinned)


def _offline_names() -> str:
    return " ".join(f"{name}={os.environ[name]}" for name in OFFLINE_ENVS
                    if os.environ.get(name, "").strip().lower() in _TRUE)


def _download(url: str, dest: Path, expected: int | None, *, context: str, hint: str) -> None:
    """GET `url` into `dest`; failures that may pass are tried again (ATTEMPTS, logged), others not."""
    from harness import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"medllm-harness/{__version__}"})
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _stream(request, dest, expected, context)
            return
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
            transient = exc.code in _TRANSIENT_HTTP
        except urllib.error.URLError as exc:
            reason = str(exc.reason)
            transient = isinstance(exc.reason, (TimeoutError, ConnectionResetError))
        except (TimeoutError, ConnectionResetError, http.client.IncompleteRead) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            transient = True
        if not transient or attempt == ATTEMPTS:
            tries = f" after {attempt} tries" if attempt > 1 else ""
            raise HarnessError(f"{context}: could not download {url}{tries}: {reason}; {hint}") from None
        delay = RETRY_DELAY_S * 2 ** (attempt - 1)
        log.warning("%s: download of %s failed (%s); try %d of %d in %.0f s", context, url, reason,
                    attempt + 1, ATTEMPTS, delay)
        time.sleep(delay)


def _stream(request: urllib.request.Request, dest: Path, expected: int | None, context: str) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected
        name = request.full_url.rsplit("/", 1)[-1]
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
            written = 0
            while chunk := response.read(_CHUNK):
                written += len(chunk)
                if expected is not None and written > expected:
                    raise HarnessError(f"{context}: {request.full_url} is larger than the {expected} bytes pinned: "
                                       "the download was stopped and discarded")
                out.write(chunk)
                bar.update(len(chunk))
