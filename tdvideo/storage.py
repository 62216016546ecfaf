"""Where the bytes live: a local path, or a URL of any fsspec file system.

``s3://``, ``gs://``, ``az://``, ``https://`` and ``hf://`` URLs are read through fsspec
with range requests (a 2 GB object is never downloaded whole), listed recursively like
folders, and identified by what the store says of them (size, ETag or version,
modification time). A :class:`Url` keeps, beside its text, the query string a signed URL
needs and the storage options (credentials, an endpoint) to reach it, so that it can be
handed to a decoding process as it is; neither ever appears in what it prints, in an
output, a log or a record: a URL is recorded as ``str(url)``, without its query string.

A decoding process reads an S3 object by a presigned address the main process signs for it
(:func:`addressed`), with the standard library's HTTP client instead of the SDK.

On a local path none of this costs anything: local paths stay :class:`pathlib.Path` and
are read as before. Each store's package is an extra (``tdvideo[s3]``, ``[gcs]``,
``[azure]``, ``[hf]``, ``[http]``); a URL whose package is missing says which to install.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, BinaryIO

from .errors import UsageError, first_line

__all__ = [
    "SKIM_BLOCK", "STREAM_BLOCK", "TarMember", "Url", "addressed", "exists_url", "glob_url", "is_url", "location", "open_read", "put_bytes", "put_file", "reason", "remove_url", "stat_url", "walk_url",
]

log = logging.getLogger("tdvideo")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# The extra that brings each store's fsspec implementation.
_EXTRAS = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
    "adl": "azure", "hf": "hf", "http": "http", "https": "http",
}
# Seconds to wait for a store to connect or to answer a read, unless the options say otherwise
# (under this key: the setting storage_timeout).
DEFAULT_TIMEOUT = 60.0
TIMEOUT_OPTION = "storage_timeout"
# Tries of a read that a store broke off (a reset connection, a 5xx), with a growing pause.
READ_TRIES = 4
# Tries of a request that gets no answer within the timeout (or a refused connection): the S3
# SDK's own (the retries in _with_timeouts), also where a worker reads without the SDK.
SILENT_TRIES = 3
_BACKOFF_SECONDS = 0.5


_QUERY = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]*://[^\s?'"]*)\?[^\s'"]*""")


def reason(exc: BaseException) -> str:
    """An error of a store as one line, with the query string of any URL in it taken out:
    clients put the URL they fetched in their messages, signature and all."""
    return _QUERY.sub(r"\1", first_line(exc))


def is_url(value: object) -> bool:
    """Whether ``value`` names a location by URL (``scheme://...``; ``file://`` is a local path)."""
    if isinstance(value, Url):
        return True
    match = _SCHEME.match(value) if isinstance(value, str) else None
    return match is not None and match.group(1).lower() != "file"


@dataclass(frozen=True, eq=True)
class Url:
    """A file or folder in a store. ``str(url)`` is ``scheme://path``, never the query string
    or the storage options, which are kept only to reach it. Path-like: ``name``, ``stem``,
    ``suffix``, ``parent``, ``url / "name"``, ``with_name``, ``with_suffix``, ``relative_to``."""

    scheme: str
    path: str
    query: str = field(default="", compare=False, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # An HTTP(S) address to GET the object by without the store's SDK (a presigned URL, its
    # signature in its query string): see :func:`addressed`. Never shown either.
    direct: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, options: Mapping[str, Any] | None = None) -> Url:
        match = _SCHEME.match(text)
        if match is None:
            raise UsageError(f"{text!r} is not a URL")
        rest = text[match.end() :]
        path, _, query = rest.partition("?")
        return cls(match.group(1).lower(), path.rstrip("/") or path, query, MappingProxyType(dict(options or {})))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"Url({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # the mapping proxy does not pickle: a plain dict does
        return (type(self), (self.scheme, self.path, self.query, dict(self.options), self.direct))

    @property
    def full(self) -> str:
        """The URL with its query string: what is fetched, never what is shown."""
        return f"{self}?{self.query}" if self.query else str(self)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> Url:
        head = self.path.rsplit("/", 1)[0] if "/" in self.path else self.path
        return Url(self.scheme, head, "", self.options)

    def __truediv__(self, other: str | PurePosixPath | os.PathLike[str]) -> Url:
        tail = PurePosixPath(os.fspath(other)).as_posix()
        return Url(self.scheme, f"{self.path.rstrip('/')}/{tail}" if tail not in ("", ".") else self.path, "", self.options)

    def with_name(self, name: str) -> Url:
        return self.parent / name

    def with_suffix(self, suffix: str) -> Url:
        return self.with_name(PurePosixPath(self.name).with_suffix(suffix).name)

    def relative_to(self, other: Url) -> PurePosixPath:
        prefix = other.path.rstrip("/") + "/"
        if self.scheme != other.scheme or not self.path.startswith(prefix):
            raise ValueError(f"{self} is not below {other}")
        return PurePosixPath(self.path[len(prefix) :])

    def as_posix(self) -> str:
        return str(self)


@dataclass(frozen=True)
class TarMember:
    """A file inside a tar archive (a WebDataset shard): ``size`` bytes at ``offset`` of the
    archive ``shard``, a local path or a store's object. ``str()`` is ``SHARD:NAME``."""

    shard: Path | Url
    name: str
    offset: int
    size: int
    sidecar: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix


class _Reader(io.RawIOBase):
    """A readable, seekable raw file of ``size`` bytes that keeps its own position; a
    subclass reads from ``_position`` in ``readinto``."""

    size: int
    _position: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class _Slice(_Reader):
    """Bytes ``offset`` to ``offset + size`` of an open file, as a file of their own."""

    def __init__(self, fh: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._fh, self._offset, self.size = fh, offset, size

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self.size - self._position))
        if want == 0:
            return 0
        self._fh.seek(self._offset + self._position)
        data = self._fh.read(want)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            super().close()


def location(value: str | os.PathLike[str] | Url | TarMember, options: Mapping[str, Any] | None = None) -> Path | Url | TarMember:
    """``value`` as a local :class:`Path`, or as a :class:`Url` carrying ``options``."""
    if isinstance(value, TarMember):
        return value
    if isinstance(value, Url):
        return value if options is None else Url(value.scheme, value.path, value.query, MappingProxyType(dict(options)))
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return Url.parse(text, options) if is_url(text) else Path(text)


# -- the file systems --------------------------------------------------------------------------


def _with_timeouts(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options, with connect and read timeouts for the stores whose client takes them,
    so that a store that stops answering fails a read instead of hanging it."""
    merged = dict(options)
    timeout = float(merged.pop(TIMEOUT_OPTION, DEFAULT_TIMEOUT))
    if scheme in ("s3", "s3a"):
        config = dict(merged.get("config_kwargs") or {})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        config.setdefault("retries", {"max_attempts": SILENT_TRIES, "mode": "standard"})
        # What requests use already; said so that presigned addresses (see addressed) use it
        # too: botocore presigns with SigV2 in us-east-1 otherwise, which S3 is retiring.
        config.setdefault("signature_version", "s3v4")
        merged["config_kwargs"] = config
    elif scheme in ("http", "https"):
        import aiohttp

        client = dict(merged.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout))
        merged["client_kwargs"] = client
    return merged


def filesystem(url: Url) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it (:class:`UsageError` when the
    store's package is not installed)."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url.full, **_with_timeouts(url.scheme, url.options))
    except ImportError:
        extra = _EXTRAS.get(url.scheme)
        package = f"pip install 'tdvideo[{extra}]'" if extra else "install the fsspec implementation for it"
        raise UsageError(f"{url.scheme}:// URLs need their store's package: {package}") from None
    except ValueError as exc:  # fsspec: no implementation for this protocol
        raise UsageError(f"{url}: {reason(exc)}") from None
    if url.scheme in ("s3", "s3a"):
        # s3fs tries a call five times over the SDK's own three tries: fifteen timeouts for a
        # store that stopped answering. The SDK's tries (retries in _with_timeouts) are enough.
        fs.retries = 1
    return fs, path


# -- a store that stops answering ----------------------------------------------------------
#
# A request waits at most the timeout for an answer. Once a call has failed for want of one,
# every call to the same store (endpoint and bucket, or host) in this process fails at once
# for as long as the timeout, then one is tried again, and after each further call that gets
# no answer twice as long (up to _MOST_SILENT_SECONDS): a run whose store has gone silent fails
# its remaining videos within moments (a rerun does them) instead of waiting out a timeout for
# each of them, and goes on as before once the store answers again.

_MOST_SILENT_SECONDS = 600.0
_silent: dict[tuple[str, str, str], tuple[float, float]] = {}  # a store -> (until when calls to it fail at once, for how long)


def _store_of(url: Url) -> tuple[str, str, str]:
    endpoint = ""
    if url.scheme in ("s3", "s3a"):
        client = url.options.get("client_kwargs") or {}
        endpoint = str(
            url.options.get("endpoint_url") or client.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        )
    return url.scheme, endpoint, url.path.split("/", 1)[0]


def _no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the store did not answer: a
    timeout, a refused connection, an endpoint that cannot be connected to."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {k.__name__ for k in type(current).__mro__}
        if isinstance(current, (TimeoutError, ConnectionRefusedError)) or names & {"ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError"}:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _answering(url: Url) -> Iterator[None]:
    """Around a call to ``url``'s store: fails at once (``TimeoutError``) while the store is
    taken as silent; takes it as silent (for the timeout, then twice as long each time) where
    the call fails for want of an answer."""
    store = _store_of(url)
    until, span = _silent.get(store, (0.0, 0.0))
    if time.monotonic() < until:
        raise TimeoutError(f"its store gave no answer within {_timeout(url):g} s moments ago; not asked again yet")
    try:
        yield
    except BaseException as exc:
        if _no_answer(exc):
            span = min(2 * span, _MOST_SILENT_SECONDS) if span else _timeout(url)
            _silent[store] = (time.monotonic() + span, span)
        raise
    _silent.pop(store, None)


def stat_url(url: Url, *, ahead: bool = False) -> dict[str, Any]:
    """What the store says of ``url``: its ``type`` ("file" or "directory"), ``size``, and
    what identifies its contents (``ETag``, ``VersionId``, ``LastModified`` as the store
    gives them). Raises what the store raises (``FileNotFoundError``, ``PermissionError``,
    connection errors). ``ahead``: the object is read next, in this process; by a direct
    address its first block is then fetched now, and the reader starts from it."""
    with _answering(url):
        return _stat_url(url, ahead=ahead)


def _stat_url(url: Url, *, ahead: bool) -> dict[str, Any]:
    if url.direct:
        try:
            return _direct_info(url, ahead=ahead)
        except _NotDirect as why:  # the store's SDK says what is wrong, as it would have without the address
            log.debug("%s: its address does not work (%s); asking the SDK", url, why)
    fs, path = filesystem(url)
    fs.invalidate_cache(path)  # what another process wrote since: no listing cached from before
    try:
        return fs.info(path)
    except FileNotFoundError as exc:
        # fsspec's HTTP store says "not found" for a server that does not answer, or answers
        # with any error, too; only a 404 or 410 says the file is not there.
        cause = exc.__cause__
        if url.scheme in ("http", "https") and cause is not None:
            status = getattr(cause, "status", None)
            if status is None:
                raise ConnectionError(reason(cause)) from None
            if status in (401, 403):
                raise PermissionError(f"HTTP {status}") from None
            if status not in (404, 410):
                raise ConnectionError(f"the server answered HTTP {status}") from None
        raise


def walk_url(url: Url) -> Iterator[tuple[Url, dict[str, Any]]]:
    """Every file below the prefix ``url``, recursively, in name order, with what the store
    says of it."""
    fs, path = filesystem(url)
    with _answering(url):
        found = fs.find(path, detail=True, withdirs=False)
    base = path.rstrip("/") + "/"
    for name in sorted(found):
        if not name.startswith(base):
            continue
        yield url / name[len(base) :], found[name]


class _RetryingReader(_Reader):
    """A store's file for reading, tried again after a broken read: a connection that was
    reset, or a store's 5xx, is retried :data:`READ_TRIES` times with a growing pause,
    reopening at the same offset; then the error is raised, naming the URL. ``info`` is
    what the store said of the object when it was opened (its ``type``, ``size``, ...),
    where its client keeps it."""

    def __init__(self, url: Url, *, block_size: int) -> None:
        super().__init__()
        self.url = url
        self._fs, self._path = filesystem(url)
        self._block_size = block_size
        with _answering(url):
            self._fh = self._open()
        self._position = 0
        self.size = self._fh.size
        self.info: Mapping[str, Any] = getattr(self._fh, "details", None) or {}
        if url.scheme in ("http", "https") and self.size and self.size > block_size:
            self._check_ranges()

    def _check_ranges(self) -> None:
        """Fail now, with one line, where the server sends a whole file for a range: fsspec
        reads such a file from its start only, and each read past its first block would fail
        inside the decoder (after a download of the whole file, each time)."""
        try:
            with _answering(self.url):
                self._fh.seek(self.size - 1)
                self._fh.read(1)
            self._fh.seek(0)
        except ValueError as exc:
            self._fh.close()
            raise OSError(f"{self.url}: the server does not answer range requests, and the file is larger than a block ({self._block_size} bytes)") from exc

    def _open(self) -> Any:
        # A read-ahead cache: FFmpeg reads in small pieces, and each would otherwise be a
        # request; memory stays a block or two whatever the object's size.
        return self._fs.open(self._path, "rb", block_size=self._block_size, cache_type="readahead")

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._fh.seek(offset, whence)
        return self._position

    def readinto(self, buffer: Any) -> int:
        with _answering(self.url):
            return self._readinto(buffer)

    def _readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        for attempt in range(READ_TRIES):
            try:
                data = self._fh.read(len(view))
                break
            except Exception as exc:  # noqa: BLE001 - a store's client raises its own types (aiohttp's for a 5xx)
                if attempt + 1 == READ_TRIES or _no_answer(exc) or isinstance(exc, (FileNotFoundError, PermissionError)):
                    # Gone or refused since it was opened: the type says which, for callers that wait on it.
                    kind = next((k for k in (FileNotFoundError, PermissionError) if isinstance(exc, k)), OSError)
                    raise kind(f"{self.url}: reading at byte {self._position} failed ({reason(exc)})") from None
                log.debug("%s: read at %d failed (%s); trying again", self.url, self._position, reason(exc))
                time.sleep(_BACKOFF_SECONDS * 2**attempt)
                self._fh = self._open()
                self._fh.seek(self._position)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            super().close()


# Bytes fetched per request when reading a store's object: 16 MB for decoding, which reads
# on through the file (each request costs a round trip and the store's own work: fewer,
# larger ones are faster, as the stores advise; benchmarks/RESULTS.md); small ones for a
# walk over headers, which jumps through it.
STREAM_BLOCK = 16 * 2**20
SKIM_BLOCK = 64 * 2**10


def open_read(source: Path | Url | TarMember, *, block_size: int = STREAM_BLOCK) -> BinaryIO:
    """A binary file object to read ``source`` with (seekable; a store's through range
    requests of ``block_size`` bytes, its reader's ``info`` being what the store said of
    it; a tar member as the bytes of its shard it holds)."""
    if isinstance(source, TarMember):
        shard: Any
        if isinstance(source.shard, Url):
            # Its reader starts at the member: the shard's first block is no member's.
            shard = io.BufferedReader(_url_reader(source.shard, block_size=block_size, at=source.offset), buffer_size=256 * 1024)  # type: ignore[arg-type]
        else:
            shard = open(source.shard, "rb")  # noqa: SIM115 - the slice's reader closes it
        return io.BufferedReader(_Slice(shard, source.offset, source.size), buffer_size=256 * 1024)  # type: ignore[arg-type]
    if isinstance(source, Url):
        return io.BufferedReader(_url_reader(source, block_size=block_size), buffer_size=256 * 1024)  # type: ignore[arg-type]
    return open(source, "rb")


def _url_reader(url: Url, *, block_size: int, at: int = 0) -> io.RawIOBase:
    """A raw reader of ``url``: by its direct address where it has one that works, else
    through the SDK. ``at``: where reading will start."""
    if url.direct:
        try:
            return _DirectReader(url, block_size=block_size, at=at)
        except _NotDirect as why:
            log.debug("%s: its address does not work (%s); reading through the SDK", url, why)
    return _RetryingReader(url, block_size=block_size)


# -- reading by a direct address ---------------------------------------------------------------
#
# A decoding process reads a store's object by a presigned HTTPS address with the standard
# library's HTTP client: the S3 SDK (s3fs, aiobotocore) costs each process about 0.35 s of
# CPU to import and to build its client, a tenth of the work of a short clip
# (benchmarks/RESULTS.md). The main process, which has the SDK, signs. Where the address does
# not work as expected (a redirect, a 4xx: a region, an expired session token), the SDK reads
# instead and says what is wrong, as it did without the address.

SIGNED_SECONDS = 12 * 3600  # how long an address is valid: it is signed as the video is handed out

# The last block this process fetched by a direct address: (address, what the store said of
# the object, where the block starts, its bytes). A decoding process opens a video three
# times (its identity, the decoder, the walk over its headers that checks its length), one
# after the other; where they read the same block it is fetched once: a clip no larger than
# a block costs one request, not four. Memory: at most the one block.
_last_block: tuple[str, dict[str, Any], int, bytes] | None = None


class _NotDirect(Exception):
    """The direct address gave no usable answer: read through the store's SDK."""


def addressed(source: Path | Url | TarMember | None) -> Path | Url | TarMember | None:
    """``source`` to be read in another process: an S3 object (or a shard on S3) with a
    presigned address to GET it by (:attr:`Url.direct`); anything else as it is."""
    if isinstance(source, TarMember) and isinstance(source.shard, Url):
        return replace(source, shard=addressed(source.shard))
    if not isinstance(source, Url) or source.direct or source.scheme not in ("s3", "s3a") or _own_connection(source.options):
        return source
    fs, path = filesystem(source)
    try:
        href = fs.sign(path, expiration=SIGNED_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the SDK raises its own types; signing is only a shortcut
        log.debug("%s: no direct address (%s); its readers use the SDK", source, reason(exc))
        return source
    import urllib.request

    if urllib.request.getproxies().get(href.split(":", 1)[0]):
        return source  # the SDK goes through the proxy; the standard client here would not
    return replace(source, direct=href)


def _own_connection(options: Mapping[str, Any]) -> bool:
    """Whether the options set how the SDK connects (a proxy, whether and how to verify
    certificates), which the standard client would not follow."""
    config = options.get("config_kwargs") or {}
    client = options.get("client_kwargs") or {}
    return bool(config.get("proxies") or "verify" in client or "verify" in options)


def _timeout(url: Url) -> float:
    return float(url.options.get(TIMEOUT_OPTION, DEFAULT_TIMEOUT))


class _DirectReader(_Reader):
    """An object read by its direct address, ``block_size`` bytes a ranged GET on one kept-alive
    connection (memory: one block, whatever the object's size), the first at byte ``at``.

    Every GET after the first asks for the version the first saw (``If-Match`` its ETag), so a
    video is never decoded from two versions of an object. A broken read (a reset, a timeout,
    a 5xx, a 429) is tried again as in :class:`_RetryingReader`. An address that stops working
    part-way (a signature made with a session token that has expired) hands on to the SDK's
    reader, which goes on where it stopped if the object is still the same version. ``info``
    is what the first answer said of the object.

    A block is taken from :data:`_last_block` instead of a GET where that is a block of the
    same address and version (``shared``: not for a fresh look at the object)."""

    def __init__(self, url: Url, *, block_size: int, at: int = 0, shared: bool = True) -> None:
        super().__init__()
        self.url = url
        self._block_size = block_size
        self._shared = shared
        self._conn: Any = None
        self._etag = ""
        self._sdk: _RetryingReader | None = None
        kept = self._kept(at)
        if kept is not None:
            self.info, self._block_start, self._block = kept
        else:
            status, headers, data = self._get(at, block_size, first=True)
            try:
                self.info = _info_of(status, headers)
            except _NotDirect:
                self._drop()
                raise
            self._block, self._block_start = data, at
            self._keep()
        self.size = int(self.info["size"])
        self._etag = self.info["ETag"]
        self._position = 0

    def _kept(self, position: int) -> tuple[dict[str, Any], int, bytes] | None:
        """The last block fetched in this process, where it holds ``position`` of this object."""
        if not self._shared or _last_block is None:
            return None
        href, info, start, data = _last_block
        if href != self.url.direct or not start <= position < start + len(data) or self._etag not in ("", info["ETag"]):
            return None
        return info, start, data

    def _keep(self) -> None:
        """Make this reader's block the one kept (none while the next one is fetched)."""
        global _last_block
        if self._shared:
            _last_block = (self.url.direct, self.info, self._block_start, self._block) if self._block else None

    def _connection(self) -> Any:
        if self._conn is None:
            import http.client
            import urllib.parse

            parts = urllib.parse.urlsplit(self.url.direct)
            if parts.scheme == "https":
                import ssl

                # The certificates the SDK trusts where AWS_CA_BUNDLE names them; else the system's
                # (a certificate they do not cover fails the first read, and the SDK reads instead).
                context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
                self._conn = http.client.HTTPSConnection(parts.netloc, timeout=_timeout(self.url), context=context)
            else:
                self._conn = http.client.HTTPConnection(parts.netloc, timeout=_timeout(self.url))
            self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        return self._conn

    def _get(self, start: int, length: int, *, first: bool = False) -> tuple[int, Any, bytes]:
        """One ranged GET, tried again after a broken read (after no answer, as often as the
        SDK tries): (status, headers, body). Raises :class:`_NotDirect` where the SDK should
        read instead."""
        with _answering(self.url):
            return self._get_once_answered(start, length, first=first)

    def _get_once_answered(self, start: int, length: int, *, first: bool) -> tuple[int, Any, bytes]:
        import http.client
        import ssl

        headers = {"Range": f"bytes={start}-{start + length - 1}", "Accept-Encoding": "identity"}
        if self._etag:
            headers["If-Match"] = self._etag
        tries = 0
        while True:
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request("GET", self._target, headers=headers)
                response = conn.getresponse()
                body = self._body(response, start, length)
            except ssl.SSLError as exc:
                self._drop()
                if first:
                    raise _NotDirect(reason(exc)) from None
                problem = reason(exc)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if reused and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    continue  # a kept-alive connection the store closed while it was idle: a new one
                problem = f"no answer within {_timeout(self.url):g} s" if isinstance(exc, TimeoutError) else reason(exc) or type(exc).__name__
                if _no_answer(exc) and tries + 1 >= SILENT_TRIES:  # as many tries as the SDK's, then _answering's pause
                    raise OSError(f"{self.url}: reading at byte {start} failed ({problem})") from exc
            else:
                if body is not None:
                    return response.status, response.headers, body
                status = response.status
                self._drop()  # the body of an answer not taken is left unread
                if status < 500 and status != 429:
                    if first or status in (301, 302, 307, 400, 401, 403):
                        raise _NotDirect(f"HTTP {status}")
                    what = "the object changed while it was read" if status in (404, 412) else "was refused"
                    raise OSError(f"{self.url}: reading at byte {start} {what} (HTTP {status})")
                problem = f"HTTP {status}"
            tries += 1
            if tries == READ_TRIES:
                raise OSError(f"{self.url}: reading at byte {start} failed ({problem})")
            log.debug("%s: read at %d failed (%s); trying again", self.url, start, problem)
            time.sleep(_BACKOFF_SECONDS * 2 ** (tries - 1))

    def _body(self, response: Any, start: int, length: int) -> bytes | None:
        """The bytes of an answer to a GET of ``length`` bytes at ``start``; None for an answer
        that is no such range (an error, a redirect)."""
        status = response.status
        if status == 416:
            response.read()  # past the end (an empty object): nothing, and the connection stays usable
            return b""
        if status == 206:
            span = response.headers.get("Content-Range", "")
            if not span.startswith(f"bytes {start}-"):
                raise OSError(f"{self.url}: asked for bytes from {start}, the store sent {span or 'no range'}")
        elif not (status == 200 and start == 0 and response.headers.get("Content-Length", "").isdigit()
                  and int(response.headers["Content-Length"]) <= length):
            return None  # a 200 is the whole object: taken only where it is no more than was asked for
        body = response.read(length + 1)
        if len(body) > length:
            self._drop()
            raise OSError(f"{self.url}: the store sent more than the {length} bytes asked for at {start}")
        return body

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _hand_on(self, why: _NotDirect) -> None:
        """Read on through the SDK, where the object is still the version read so far."""
        log.debug("%s: its address stopped working (%s); reading on through the SDK", self.url, why)
        try:
            sdk = _RetryingReader(self.url, block_size=self._block_size)
        except Exception as exc:  # noqa: BLE001 - a store's client raises its own types: all mean "cannot read on"
            raise OSError(f"{self.url}: reading at byte {self._position} failed ({reason(exc)})") from None
        if str(sdk.info.get("ETag", "")).strip('"') != self._etag.strip('"'):
            sdk.close()
            raise OSError(f"{self.url}: reading at byte {self._position} the object changed while it was read")
        self._sdk = sdk

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        if self._sdk is not None:
            self._sdk.seek(self._position)
            count = self._sdk.readinto(view)
            self._position += count
            return count
        at = self._position - self._block_start
        if not 0 <= at < len(self._block):
            kept = self._kept(self._position)
            if kept is not None:
                _, self._block_start, self._block = kept
            else:
                self._block_start = self._position
                self._block = b""  # the old block goes before the new one comes
                self._keep()
                try:
                    _, _, self._block = self._get(self._position, self._block_size)
                except _NotDirect as why:
                    self._hand_on(why)
                    return self.readinto(view)
                self._keep()
            at = self._position - self._block_start
        count = min(len(view), len(self._block) - at)
        if count <= 0:
            raise OSError(f"{self.url}: the store sent no bytes at byte {self._position} of {self.size}")
        view[:count] = self._block[at : at + count]
        self._position += count
        return count

    def close(self) -> None:
        try:
            self._drop()
            if self._sdk is not None:
                self._sdk.close()
        finally:
            super().close()


def _info_of(status: int, headers: Any) -> dict[str, Any]:
    """What a ranged GET's answer says of the object, with the keys the SDK's ``info`` has."""
    from email.utils import parsedate_to_datetime

    span = headers.get("Content-Range", "")
    if status == 200:
        size = int(headers["Content-Length"])
    elif "/" in span and span.rsplit("/", 1)[1].isdigit():
        size = int(span.rsplit("/", 1)[1])
    else:
        raise _NotDirect(f"HTTP {status} without the object's size")
    if not headers.get("ETag"):
        raise _NotDirect("no ETag: later reads could not ask for the same version")
    info: dict[str, Any] = {"type": "file", "size": size, "ETag": headers["ETag"]}
    if headers.get("x-amz-version-id"):
        info["VersionId"] = headers["x-amz-version-id"]
    if headers.get("Last-Modified"):
        try:
            info["LastModified"] = parsedate_to_datetime(headers["Last-Modified"])
        except (TypeError, ValueError):
            pass  # no time: the identity has the ETag and size
    return info


def _direct_info(url: Url, *, ahead: bool) -> dict[str, Any]:
    """What the store says of ``url``, from a GET by its direct address: of its first block,
    kept for the reader that comes next (``ahead``), else of its first byte, asked afresh."""
    reader = _DirectReader(url, block_size=STREAM_BLOCK) if ahead else _DirectReader(url, block_size=1, shared=False)
    try:
        return dict(reader.info)
    finally:
        reader.close()


# -- writing to a store ------------------------------------------------------------------------
#
# A PUT of an object is atomic: readers see the old object or the new one, never part of it.
# So an object is written whole, from memory or from a finished local file, and there is no
# temporary in the store to clean up after a kill.


def _failed(url: Url, exc: BaseException) -> OSError:
    """A store's error as an ``OSError`` naming the URL (its query string left out)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, f"{url}: {reason(exc)}")
    return OSError(f"{url}: {reason(exc)}")


def put_bytes(url: Url, data: bytes) -> None:
    """Write the object ``url`` with ``data``, whole."""
    fs, path = filesystem(url)
    try:
        with _answering(url):
            fs.pipe_file(path, data)
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types: all mean "not written"
        raise _failed(url, exc) from None


def put_file(local: Path, url: Url) -> None:
    """Upload the finished local file ``local`` as the object ``url`` (in parts when large)."""
    fs, path = filesystem(url)
    try:
        with _answering(url):
            fs.put_file(str(local), path)
    except Exception as exc:  # noqa: BLE001 - as put_bytes
        raise _failed(url, exc) from None


def remove_url(url: Url) -> bool:
    """Remove the object ``url``; True if it was there."""
    fs, path = filesystem(url)
    try:
        with _answering(url):
            if not fs.exists(path):
                return False
            fs.rm_file(path)
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001 - as put_bytes
        raise _failed(url, exc) from None
    fs.invalidate_cache(path)
    return True


def exists_url(url: Url) -> bool:
    fs, path = filesystem(url)
    fs.invalidate_cache(path)  # what another process wrote since: no listing cached from before
    with _answering(url):
        return bool(fs.exists(path))


def glob_url(url: Url, pattern: str) -> list[Url]:
    """The objects directly below ``url`` whose names match ``pattern`` (``failures*.jsonl``)."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    base = path.rstrip("/") + "/"
    with _answering(url):
        found = fs.glob(base + pattern)
    return [url / name[len(base) :] for name in sorted(found) if name.startswith(base)]
