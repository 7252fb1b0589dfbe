"""API dumps: every upstream request and response written to files, for debugging.

Off unless a directory is configured (the provider's ``settings.api_dump_dir``, else
``AIBRIDGE_API_DUMP_DIR``). Each upstream call — every failover attempt and every call of
the agentic loop — gets one pair of files (reference coder-aibridge-core §6.6)::

    {dir}/{provider}/{model}/{unixMillis}-{interception id}-{seq}.req.txt
    {dir}/{provider}/{model}/{unixMillis}-{interception id}-{seq}.resp.txt
    {dir}/{provider}/passthrough/{unixMillis}-{path}-{seq}.req.txt   (and .resp.txt)

``.req_error.txt`` replaces ``.resp.txt`` when the request could not be sent. A file holds
the request (or status) line, the headers sorted by name with credentials masked, a blank
line, and the body: pretty-printed when it is JSON, else as sent; a streamed response is
appended chunk by chunk as the relay reads it.

Nothing here blocks the event loop: the relay only puts bytes on a queue; one writer
thread per directory formats, writes and enforces the caps (``max_file_bytes`` per file,
``max_dir_bytes`` for the directory tree, oldest files removed first), so a forgotten
setting cannot fill the disk. Folders are 0700 and files 0600.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import aiohttp
import orjson
from yarl import URL

from aibridge.secrets_mask import mask_secret

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DIR_BYTES = 512 * 1024 * 1024
# What may wait in a writer's queue: past it the relay drops dump bytes rather than grow
# memory (the dump says so) — the relay never waits for the disk.
MAX_PENDING_BYTES = 64 * 1024 * 1024

SECRET_HEADERS = frozenset(
    {
        # Request side (reference §6.6) plus the other credential carriers we know.
        "authorization",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "cookie",
        "proxy-authorization",
        "x-amz-security-token",
        "x-goog-api-key",
        "x-aibridge-token",
        # Response side.
        "set-cookie",
        "www-authenticate",
        "proxy-authenticate",
    }
)
"""Header names whose values are masked in dumps (lower-case)."""

_SECRET_QUERY = re.compile(r"(key|token|secret|signature|sig|password|auth)", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
TRUNCATED = (
    b"\n[api dump truncated: the file reached its size cap (AIBRIDGE_API_DUMP_MAX_FILE_BYTES)]\n"
)
DROPPED = b"\n[api dump incomplete: the dump writer fell behind and dropped data]\n"


def path_part(text: str) -> str:
    """``text`` as one safe path component: ``/`` becomes ``-`` (as the reference names
    model folders), anything else outside ``[A-Za-z0-9._-]`` becomes ``_``, and no
    component is empty or starts with a dot (a client-chosen model name cannot climb out
    of the dump directory)."""
    cleaned = _UNSAFE.sub("_", text.replace("/", "-")).lstrip(".")
    return cleaned[:120] or "_"


def masked_headers(headers: Mapping[str, str], extra_secret: str | None = None) -> bytes:
    """Header lines sorted by name, each credential value masked."""
    secret = SECRET_HEADERS | ({extra_secret.lower()} if extra_secret else set())
    lines = []
    for name, value in sorted(headers.items(), key=lambda item: item[0].lower()):
        shown = mask_secret(value) if name.lower() in secret else value
        lines.append(f"{name}: {shown}\n")
    return "".join(lines).encode(errors="replace")


def masked_url(url: URL) -> str:
    """``url`` with credential-looking query values (``key=``, ``token=``, …) masked."""
    if not url.query:
        return str(url)
    query = [(k, mask_secret(v) if _SECRET_QUERY.search(k) else v) for k, v in url.query.items()]
    return str(url.with_query(query))


def pretty_body(data: bytes) -> bytes:
    """``data`` pretty-printed when it is JSON (key order kept), else unchanged."""
    stripped = data.lstrip()
    if stripped[:1] not in (b"{", b"["):
        return data
    try:
        return orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2) + b"\n"
    except orjson.JSONDecodeError:
        return data


class _Flush:
    """A marker in a writer's queue: set once everything queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class DumpWriter:
    """One directory's writer thread: appends queued pieces to their files under caps."""

    def __init__(self, root: Path, *, max_file_bytes: int, max_dir_bytes: int) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_dir_bytes = max_dir_bytes
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        # Written files in creation order (the eviction order) with their sizes.
        self._sizes: OrderedDict[Path, int] = OrderedDict()
        self._total = 0
        self._truncated: set[Path] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"aibridge-api-dump:{root}", daemon=True
        )
        self._thread.start()

    # -- loop side: never blocks -------------------------------------------------------

    def put(self, path: Path, data: bytes, *, pretty: bool = False) -> None:
        """Queue ``data`` for appending to ``path`` (``pretty``: format it as JSON first)."""
        with self._pending_lock:
            if self._pending + len(data) > MAX_PENDING_BYTES:
                data, pretty = DROPPED, False
            self._pending += len(data)
        self._queue.put((path, data, pretty))

    def flush(self, timeout: float) -> bool:
        """Block (in a thread, not on the loop) until everything queued so far is
        written; False on timeout."""
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._scan()
        except OSError as exc:
            log.warning("api dump directory unreadable", extra={"error": str(exc)})
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Flush):
                item.done.set()
                continue
            path, data, pretty = item
            with self._pending_lock:
                self._pending -= len(data)
            try:
                self._append(path, pretty_body(data) if pretty else data)
            except OSError as exc:
                # A full or unwritable disk must not take the gateway down: logged, skipped.
                log.warning("api dump write failed", extra={"error": str(exc)})

    def _scan(self) -> None:
        """Count what an earlier run left, oldest first, so the directory cap holds
        across restarts."""
        if not self.root.is_dir():
            return
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath, name)
                with contextlib.suppress(OSError):
                    st = path.stat()
                    found.append((st.st_mtime_ns, str(path), st.st_size))
        for _mtime, name, size in sorted(found):
            self._sizes[Path(name)] = size
            self._total += size

    def _append(self, path: Path, data: bytes) -> None:
        size = self._sizes.get(path)
        if size is None:
            self._make_dirs(path.parent)
            size = 0
        if path in self._truncated:
            return
        room = self.max_file_bytes - size
        if len(data) > room:
            data = data[: max(room, 0)] + TRUNCATED
            self._truncated.add(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._sizes[path] = size + len(data)
        self._total += len(data)
        if self._total > self.max_dir_bytes:
            self._evict(keep=path)

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents as 0700 (whatever the umask)."""
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for created in reversed(missing):
            with contextlib.suppress(FileExistsError):
                created.mkdir(mode=0o700)
            os.chmod(created, 0o700)

    def _evict(self, keep: Path) -> None:
        """Remove the oldest files until the tree fits its cap (the file being written
        goes last: it is the newest)."""
        for path in list(self._sizes):
            if self._total <= self.max_dir_bytes:
                return
            if path == keep:
                continue
            size = self._sizes.pop(path)
            self._total -= size
            self._truncated.discard(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class CallDump:
    """The pair of files of one upstream call."""

    __slots__ = ("_base", "_secret_header", "_writer")

    def __init__(self, writer: DumpWriter, base: Path, secret_header: str | None) -> None:
        self._writer = writer
        self._base = base
        self._secret_header = secret_header

    def request(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None
    ) -> None:
        """Write the request file."""
        head = f"{method} {masked_url(url)}\n".encode() + masked_headers(
            headers, self._secret_header
        )
        self._writer.put(self._path(".req.txt"), head + b"\n")
        if body:
            self._writer.put(self._path(".req.txt"), body, pretty=True)

    def request_error(self, exc: BaseException) -> None:
        """Write why the request got no response."""
        text = f"{type(exc).__name__}: {exc}\n".encode(errors="replace")
        self._writer.put(self._path(".req_error.txt"), text)

    def response(self, upstream: aiohttp.ClientResponse) -> None:
        """Write the status line and headers now, and the body as the relay reads it."""
        version = upstream.version
        proto = f"HTTP/{version.major}.{version.minor}" if version else "HTTP/1.1"
        line = f"{proto} {upstream.status} {upstream.reason or ''}".rstrip()
        path = self._path(".resp.txt")
        self._writer.put(
            path,
            f"{line}\n".encode() + masked_headers(upstream.headers, self._secret_header) + b"\n",
        )
        content_type = upstream.headers.get("Content-Type", "")
        json_body = "json" in content_type and "stream" not in content_type
        # The relay reads ``content``: the tee sees every chunk it reads, nothing more.
        upstream.content = cast(Any, _Tee(upstream.content, self._writer, path, json_body))

    def _path(self, suffix: str) -> Path:
        return self._base.with_name(self._base.name + suffix)


class _Tee:
    """A response's body reader that copies what is read into the dump.

    A JSON body is held until its end so it can be pretty-printed (bounded by the file
    cap: past it, it is written raw and the writer truncates it); anything else — an SSE
    stream — goes to the writer chunk by chunk as it arrives.
    """

    def __init__(self, inner: Any, writer: DumpWriter, path: Path, hold_json: bool) -> None:
        self._inner = inner
        self._writer = writer
        self._path = path
        self._held: list[bytes] | None = [] if hold_json else None
        self._held_size = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _copy(self, chunk: bytes) -> None:
        held = self._held
        if held is None:
            if chunk:
                self._writer.put(self._path, chunk)
            return
        if chunk:
            held.append(chunk)
            self._held_size += len(chunk)
            if self._held_size <= self._writer.max_file_bytes:
                return
        # The end of the body (or more than a file may hold): out it goes.
        self._held = None
        if held:
            self._writer.put(self._path, b"".join(held), pretty=not chunk)

    async def readany(self) -> bytes:
        """``StreamReader.readany``, copied."""
        chunk = cast(bytes, await self._inner.readany())
        self._copy(chunk)
        return chunk

    async def read(self, n: int = -1) -> bytes:
        """``StreamReader.read``, copied."""
        chunk = cast(bytes, await self._inner.read(n))
        self._copy(chunk)
        if n < 0 and chunk:
            self._copy(b"")
        return chunk

    async def iter_any(self) -> AsyncIterator[bytes]:
        """``StreamReader.iter_any``, copied."""
        while chunk := await self.readany():
            yield chunk

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """``StreamReader.iter_chunked``, copied."""
        while chunk := await self.read(n):
            yield chunk


class Dumper:
    """Names the dump files of one directory (and owns its writer)."""

    def __init__(self, root: Path, writer: DumpWriter) -> None:
        self.root = root
        self.writer = writer
        self._seq = itertools.count(1)

    def bridged(
        self, provider: str, model: str | None, interception_id: UUID, secret_header: str | None
    ) -> CallDump:
        """The files of one upstream call of a bridged interception."""
        name = f"{_millis()}-{interception_id}-{next(self._seq)}"
        folder = self.root / path_part(provider) / path_part(model or "unknown")
        return CallDump(self.writer, folder / name, secret_header)

    def passthrough(self, provider: str, path: str, secret_header: str | None) -> CallDump:
        """The files of one passthrough call (their own folder)."""
        name = f"{_millis()}-{path_part(path.strip('/'))}-{next(self._seq)}"
        folder = self.root / path_part(provider) / "passthrough"
        return CallDump(self.writer, folder / name, secret_header)


def _millis() -> int:
    return time.time_ns() // 1_000_000


class ApiDumps:
    """The process's dump directories: one :class:`Dumper` (and writer thread) per
    directory, created on first use; ``default_dir`` serves providers without their own."""

    def __init__(
        self,
        default_dir: Path | None = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_dir_bytes: int = DEFAULT_MAX_DIR_BYTES,
    ) -> None:
        self.default_dir = default_dir
        self.max_file_bytes = max_file_bytes
        self.max_dir_bytes = max_dir_bytes
        self._dumpers: dict[Path, Dumper] = {}

    def for_dir(self, configured: str | None) -> Dumper | None:
        """The dumper for a provider's ``api_dump_dir`` (None: the default; None back
        when dumps are off)."""
        root = Path(configured) if configured else self.default_dir
        if root is None:
            return None
        dumper = self._dumpers.get(root)
        if dumper is None:
            writer = DumpWriter(
                root, max_file_bytes=self.max_file_bytes, max_dir_bytes=self.max_dir_bytes
            )
            dumper = self._dumpers[root] = Dumper(root, writer)
        return dumper

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (blocking: call it in a thread) until every queued piece is written."""
        return all(d.writer.flush(timeout) for d in list(self._dumpers.values()))

    def close(self) -> None:
        """Stop every writer after writing what is queued (blocking: in a thread)."""
        dumpers, self._dumpers = list(self._dumpers.values()), {}
        for dumper in dumpers:
            dumper.writer.close()
