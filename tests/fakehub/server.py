"""A stand-in for the Hugging Face Hub on loopback, for `HF_ENDPOINT`.

It serves the files of one local model folder (the tiny GPT-2) as a model repo
through the routes `huggingface_hub` 2.4's `snapshot_download` really calls:

    GET  /api/models/<repo>/revision/<revision>     model info: the commit sha
    GET  /api/models/<repo>/tree/<sha>?recursive=…  the file listing (size, oid, lfs)
    HEAD /<repo>/resolve/<sha>/<file>               ETag, X-Repo-Commit, Content-Length
    GET  /<repo>/resolve/<sha>/<file>               the bytes, with Range (206) support

Unknown repos, revisions and files answer 404 with the `X-Error-Code` the real
Hub sends (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), which is how
the client tells them apart. Every request is recorded (`hub.requests`), and
faults can be injected: an HTTP status for matching requests, or a body cut off
after N bytes (the connection is closed mid-file, as a flaky network does).

It runs in a thread (`with FakeHub(folder) as hub:`), so a test can run
`download_model.py` in a subprocess against `hub.url`; or from a shell:
`python -m tests.fakehub --model-dir models/tiny-gpt2 --port 0`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Files a real GPT-2 repo has that storybot must never fetch (download_model.py's
# allow-list leaves them out); served so a test can prove they are not requested.
DECOYS = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"# tiny-gpt2\n\nA stand-in for gpt2, served by the fake Hub.\n",
    "pytorch_model.bin": b"not a pickle: storybot must not fetch this\n" * 16,
    "onnx/decoder_model.onnx": b"not an onnx graph\n" * 16,
}
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx")  # stored in LFS, as on the Hub
RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Seen:
    """One request the fake Hub answered."""

    method: str
    path: str  # unquoted, without the query
    query: str
    range: str | None
    status: int

    @property
    def file(self) -> str | None:
        """The repo file of a /resolve/ request, else None."""
        match = re.search(r"/resolve/[^/]+/(.+)$", self.path)
        return match.group(1) if match else None

    @property
    def fetches_body(self) -> bool:
        return self.method == "GET" and self.file is not None


@dataclass
class Fault:
    """Applied to the next `times` requests that `match` (None: for ever)."""

    match: Callable[[Seen], bool]
    status: int | None = None  # answer this status instead
    cut_after: int | None = None  # or: send this many body bytes, then drop the connection
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)  # sent with `status`
    fired: int = 0

    def armed(self) -> bool:
        return self.times is None or self.fired < self.times


@dataclass
class RepoFile:
    path: str
    data: bytes
    lfs: bool
    oid: str = field(init=False)  # the git blob id
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.oid = hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        # The Hub's ETag is the sha256 for LFS files and the git blob id otherwise.
        return f'"{self.sha256 if self.lfs else self.oid}"'

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.oid,
            "size": len(self.data),
            "path": self.path,
        }
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry


class FakeHub:
    """The fake Hub; serves `model_dir` as the model repo `repo_id`."""

    def __init__(
        self,
        model_dir: Path,
        repo_id: str = "gpt2",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        exclude: tuple[str, ...] = ("storybot.json",),
        decoys: bool = True,
    ) -> None:
        self.repo_id = repo_id
        self.files: dict[str, RepoFile] = {}
        for path in sorted(Path(model_dir).rglob("*")):
            name = path.relative_to(model_dir).as_posix()
            if path.is_file() and name not in exclude and not name.startswith("."):
                self.files[name] = RepoFile(name, path.read_bytes(), name.endswith(LFS_SUFFIXES))
        if decoys:
            for name, data in DECOYS.items():
                self.files.setdefault(name, RepoFile(name, data, name.endswith(LFS_SUFFIXES)))
        digest = hashlib.sha1()
        for file in self.files.values():
            digest.update(f"{file.path}\0{file.oid}\n".encode())
        self.commit = digest.hexdigest()  # 40 hex digits, like a git commit id
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # life cycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults and what was seen -------------------------------------------------

    def fail(
        self,
        status: int,
        match: Callable[[Seen], bool] = lambda seen: True,
        *,
        times: int | None = None,
        error_code: str | None = None,
    ) -> Fault:
        """Answer `status` (with the Hub's `X-Error-Code`, if given) to matching
        requests: all of them, for ever, by default."""
        headers = {"X-Error-Code": error_code} if error_code else {}
        fault = Fault(match, status=status, times=times, headers=headers)
        self.faults.append(fault)
        return fault

    def cut(self, file: str, after: int, times: int | None = 1) -> Fault:
        """Drop the connection after `after` bytes of the body of `file`."""
        fault = Fault(
            lambda seen: seen.fetches_body and seen.file == file, cut_after=after, times=times
        )
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    def seen(self, predicate: Callable[[Seen], bool] = lambda seen: True) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if predicate(seen)]

    def body_fetches(self) -> list[Seen]:
        """GETs of file contents (as opposed to metadata: API calls and HEADs)."""
        return self.seen(lambda seen: seen.fetches_body)

    def _fault_for(self, probe: Seen) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.armed() and fault.match(probe):
                    fault.fired += 1
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    # routes ---------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        api = f"/api/models/{self.repo_id}"
        if path.startswith("/api/models/"):
            if path == api:
                return Reply.json(self.model_info())
            if not path.startswith(api + "/"):
                return not_found("RepoNotFound", "Repository not found")
            kind, _, rest = path[len(api) + 1 :].partition("/")
            if kind == "revision":
                if not self.knows(rest):
                    return not_found("RevisionNotFound", f"Invalid rev id: {rest}")
                return Reply.json(self.model_info())
            if kind == "tree":
                revision, _, prefix = rest.partition("/")
                if not self.knows(revision):
                    return not_found("RevisionNotFound", f"Invalid rev id: {revision}")
                entries = [f.tree_entry() for f in self.files.values() if f.path.startswith(prefix)]
                return Reply.json(entries)
            return not_found(None, "Sorry, we can't find the page you are looking for.")
        match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if match is None:
            return not_found(None, "Sorry, we can't find the page you are looking for.")
        repo, revision, name = match.groups()
        if repo != self.repo_id:
            return not_found("RepoNotFound", "Repository not found")
        if not self.knows(revision):
            return not_found("RevisionNotFound", f"Invalid rev id: {revision}")
        file = self.files.get(name)
        if file is None:
            return not_found("EntryNotFound", f"{name} does not exist on {revision}")
        return Reply.of_file(file, self.commit)

    def knows(self, revision: str) -> bool:
        return revision in ("main", self.commit)

    def model_info(self) -> dict[str, Any]:
        return {
            "_id": "0" * 24,
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": self.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["transformers", "safetensors", "gpt2", "text-generation"],
            "lastModified": "2024-02-19T10:57:45.000Z",
            "siblings": [{"rfilename": name} for name in self.files],
        }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    file: RepoFile | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status,
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
            json.dumps(data).encode(),
        )

    @classmethod
    def of_file(cls, file: RepoFile, commit: str) -> Reply:
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": file.etag,
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{file.path.rsplit("/", 1)[-1]}"',
        }
        return cls(200, headers, file.data, file)


def not_found(code: str | None, message: str) -> Reply:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return Reply.json({"error": message}, 404, headers)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def do_GET(self) -> None:
            self.answer()

        def do_HEAD(self) -> None:
            self.answer()

        def do_POST(self) -> None:  # telemetry and the like: not part of a download
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the record is hub.requests

        def answer(self) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            range_header = self.headers.get("Range")
            probe = Seen(self.command, path, parts.query, range_header, 0)
            fault = hub._fault_for(probe)
            if fault is not None and fault.status is not None:
                message = f"fake Hub fault {fault.status}"
                reply = Reply.json({"error": message}, fault.status, fault.headers)
            else:
                reply = hub.route(self.command, path, parse_qs(parts.query))
            body = reply.body
            status = reply.status
            headers = dict(reply.headers)
            if reply.file is not None and range_header is not None and status == 200:
                status, headers, body = self.ranged(reply, range_header)
            headers["Content-Length"] = str(len(body))
            hub._record(Seen(self.command, path, parts.query, range_header, status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is not None and fault.cut_after is not None:
                self.wfile.write(body[: fault.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # SHUT_RDWR: the client sees the body end early
                return
            self.wfile.write(body)

        def ranged(self, reply: Reply, header: str) -> tuple[int, dict[str, str], bytes]:
            size = len(reply.body)
            match = RANGE.match(header.strip())
            start = int(match.group(1)) if match else size
            end = int(match.group(2)) if match and match.group(2) else size - 1
            headers = dict(reply.headers)
            if start >= size or end < start:
                headers["Content-Range"] = f"bytes */{size}"
                return 416, headers, b""
            end = min(end, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return 206, headers, reply.body[start : end + 1]

    return Handler
