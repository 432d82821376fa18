"""``opencodec mushra serve``: the rating page and its small JSON API (standard library
``http.server.ThreadingHTTPServer``; binds 127.0.0.1 by default).

Routes:

* ``GET /`` the page (``static/index.html``), ``GET /static/mushra.js|mushra.css``;
* ``GET /api/test``: test id, title and trials with blinded condition ids and audio URLs
  (never the system names);
* ``GET /api/progress?listener=NAME``: ``{"done": [trial ids]}`` already submitted;
* ``GET /audio/<trial>/<file>.wav``: only files named in ``test.json``; single byte ranges
  (``Range: bytes=a-b``) are honoured, as browsers' media elements ask for them (a position
  of more than 18 digits is taken as beyond the file); a file removed or unreadable since
  the server started is ``500 {"ok": false, "error": "cannot read audio file NAME: <why>"}``;
* ``POST /api/submit`` with a JSON body ``{"test_id", "trial_id", "listener",
  "ratings": [{"condition": ID, "rating": 0..100}, ...]}``: checked by
  :func:`validate_submission` (known test and trial, non-empty listener, every condition
  of the trial rated exactly once, each rating a finite number in [0, 100], no unknown
  fields; a body nested too deeply or holding a number of more than 4300 digits, which
  Python's parser cannot read, is a 400 too) and stored with :func:`.db.store_trial`.
  Answers ``200 {"ok": true, ...}`` or
  ``400 {"ok": false, "error": "<what is wrong>"}`` (413 for bodies over 64 KiB, 400 for a
  negative ``Content-Length``, 411 without one). A ratings database that cannot be read
  (progress) or written (submit) is ``500 {"ok": false, "error": "<the reason>"}``.

Bounds on what a client can hold (the server may listen beyond localhost with ``--host``):
every connection's socket has a read timeout (:data:`READ_TIMEOUT_S`, 10 s: a client that
stops sending, e.g. in the middle of the headers or of a promised body, is disconnected), and
at most :data:`MAX_CONNECTIONS` (32) connections are served at once; one more is answered
``503 Service Unavailable`` and closed at once, without a thread. Both are arguments of
:func:`make_server`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import typing as tp
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..._files import error_reason
from . import db
from .spec import DB_FILE, MushraError, MushraTest, load_test

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "mushra.js": "text/javascript; charset=utf-8",
                "mushra.css": "text/css; charset=utf-8"}
MAX_BODY_BYTES = 64 * 1024
#: Seconds a connection may stay silent while the server waits to read from it.
READ_TIMEOUT_S = 10.0
#: Connections served at once; more are answered 503 and closed.
MAX_CONNECTIONS = 32
_BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: 60\r\n\r\n"
                  b'{"ok": false, "error": "too many connections; retry later"}\n')
MAX_LISTENER_CHARS = 64
SUBMISSION_FIELDS = ("test_id", "trial_id", "listener", "ratings")


class SubmissionError(MushraError):
    """A submission the server rejects (HTTP 400); the message names the problem."""


@dataclass(frozen=True)
class Submission:
    """A validated submission: ratings = (condition id, system, rating 0-100) for every
    condition of the trial, in the trial's order."""

    test_id: str
    trial_id: str
    listener: str
    ratings: tuple[tuple[str, str, float], ...]


def _reject_constant(name: str) -> tp.NoReturn:
    raise SubmissionError(f"invalid JSON number {name} (ratings must be finite numbers in [0, 100])")


def parse_json(body: bytes) -> tp.Any:
    """Decode a request body as JSON (UTF-8); NaN and Infinity are rejected, and so are
    bodies nested too deeply or holding numbers too long for the parser (a
    :class:`SubmissionError` for each, never another exception)."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"the body is not valid JSON: {exc}") from exc
    except SubmissionError:
        raise
    except RecursionError:  # e.g. 60000 nested '[': the parser runs out of stack
        raise SubmissionError("the body is JSON nested too deeply to read") from None
    except ValueError:  # int() of more than 4300 digits
        raise SubmissionError("the body holds a number of more than 4300 digits") from None


def validate_submission(test: MushraTest, payload: tp.Any) -> Submission:
    """Check a decoded submission against ``test``; raise :class:`SubmissionError` naming
    the first problem found, else return the :class:`Submission` with system names."""
    if not isinstance(payload, dict):
        raise SubmissionError(f"the submission must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(SUBMISSION_FIELDS))
    if unknown:
        raise SubmissionError(f"unknown field(s) {unknown}; expected {list(SUBMISSION_FIELDS)}")
    missing = [k for k in SUBMISSION_FIELDS if k not in payload]
    if missing:
        raise SubmissionError(f"missing field(s) {missing}")
    test_id, trial_id, listener, ratings = (payload[k] for k in SUBMISSION_FIELDS)
    if not isinstance(test_id, str) or test_id != test.test_id:
        raise SubmissionError(f"unknown test id {test_id!r} (this server runs test {test.test_id!r})")
    trial = test.trial(trial_id) if isinstance(trial_id, str) else None
    if trial is None:
        raise SubmissionError(f"unknown trial id {trial_id!r} in test {test.test_id!r}")
    if not isinstance(listener, str) or not listener.strip():
        raise SubmissionError("the listener id is missing or empty")
    listener = listener.strip()
    if len(listener) > MAX_LISTENER_CHARS or any(not ch.isprintable() for ch in listener):
        raise SubmissionError(f"the listener id must be at most {MAX_LISTENER_CHARS} printable characters")
    if not isinstance(ratings, list):
        raise SubmissionError(f"'ratings' must be a list of {{condition, rating}} objects, "
                              f"got {type(ratings).__name__}")
    given: dict[str, float] = {}
    for i, entry in enumerate(ratings):
        if not isinstance(entry, dict) or set(entry) != {"condition", "rating"}:
            raise SubmissionError(f"ratings[{i}] must be an object with exactly the fields "
                                  "'condition' and 'rating'")
        cid, value = entry["condition"], entry["rating"]
        if not isinstance(cid, str) or trial.condition(cid) is None:
            raise SubmissionError(f"ratings[{i}]: unknown condition {cid!r} in trial {trial.trial_id!r}")
        if cid in given:
            raise SubmissionError(f"ratings[{i}]: condition {cid!r} is rated more than once")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SubmissionError(f"ratings[{i}]: rating of condition {cid!r} must be a number, "
                                  f"got {json.dumps(value)}")
        if not 0 <= value <= 100:  # also false for NaN; huge ints compare exactly
            raise SubmissionError(f"ratings[{i}]: rating {value} of condition {cid!r} is out of "
                                  "range [0, 100]")
        given[cid] = float(value)
    unrated = [c.id for c in trial.conditions if c.id not in given]
    if unrated:
        raise SubmissionError(f"missing rating(s) for condition(s) {unrated} of trial {trial.trial_id!r} "
                              f"({len(given)} of {len(trial.conditions)} rated)")
    return Submission(test.test_id, trial.trial_id, listener,
                      tuple((c.id, c.system, given[c.id]) for c in trial.conditions))


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Byte positions of more digits than this are taken as this (beyond any file; ``int`` of a
#: string of more than 4300 digits raises).
_MAX_POSITION = 10**18


def _position(digits: str) -> int:
    """A byte position of a Range header, at most :data:`_MAX_POSITION`."""
    return int(digits) if len(digits) <= 18 else _MAX_POSITION


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``Range: bytes=a-b`` request on a ``size``-byte file;
    None if unsatisfiable or not understood."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = _position(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 else None
    first = _position(m.group(1))
    last = _position(m.group(2)) if m.group(2) else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


class MushraHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server holding the test, the database path and the audio whitelist."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], test: MushraTest, db_path: Path, log: bool,
                 read_timeout: float = READ_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
        self.test = test
        self.db_path = db_path
        self.log = log
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.audio_files = {f"/audio/{t.trial_id}/{Path(f).name}": test.root / f
                            for t in test.trials for f in (t.reference, *(c.file for c in t.conditions))}
        self.public_json = json.dumps(test.public()).encode()
        super().__init__(address, MushraHandler)

    def process_request(self, request: tp.Any, client_address: tp.Any) -> None:
        """Serve the connection in a thread if fewer than ``max_connections`` are being
        served, else answer 503 and close it."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: tp.Any, client_address: tp.Any) -> None:
        """Serve one connection (a thread of its own) and free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8000/``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class MushraHandler(BaseHTTPRequestHandler):
    """Requests of the rating page; see the module notes for the routes."""

    server: MushraHTTPServer
    server_version = "opencodec-mushra"

    def setup(self) -> None:
        """Give the connection's socket the server's read timeout (``StreamRequestHandler``
        applies ``self.timeout``; a timed-out request is closed by ``handle_one_request``)."""
        self.timeout = self.server.read_timeout
        super().setup()

    def log_message(self, format: str, *args: tp.Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    # -- responses --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: tp.Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"ok": False, "error": message})

    # -- GET --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/", "/index.html"):
            path = "/static/index.html"
        if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            name = path[len("/static/"):]
            self._send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), STATIC_FILES[name])
        elif path == "/api/test":
            self._send(HTTPStatus.OK, self.server.public_json, "application/json")
        elif path == "/api/progress":
            listener = (parse_qs(parts.query).get("listener") or [""])[0].strip()
            if not listener:
                self._error(HTTPStatus.BAD_REQUEST, "the listener id is missing or empty")
                return
            try:
                done = db.listener_progress(self.server.db_path, self.server.test.test_id, listener)
            except MushraError as exc:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
                return
            self._json(HTTPStatus.OK, {"ok": True, "done": done})
        elif path in self.server.audio_files:
            self._audio(self.server.audio_files[path])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")

    do_HEAD = do_GET

    def _audio(self, file: Path) -> None:
        try:
            data = file.read_bytes()
        except OSError as exc:  # removed or unreadable since the server started
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"cannot read audio file {file.name}: {error_reason(exc)}")
            return
        headers = {"Accept-Ranges": "bytes"}
        requested = self.headers.get("Range")
        if requested is None:
            self._send(HTTPStatus.OK, data, "audio/wav", headers)
            return
        span = parse_range(requested, len(data))
        if span is None:
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "audio/wav",
                       {**headers, "Content-Range": f"bytes */{len(data)}"})
            return
        first, last = span
        self._send(HTTPStatus.PARTIAL_CONTENT, data[first:last + 1], "audio/wav",
                   {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"})

    # -- POST -------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlsplit(self.path).path != "/api/submit":
            self._error(HTTPStatus.NOT_FOUND, f"not found: {self.path}")
            return
        declared = self.headers.get("Content-Length", "").strip()
        if declared.isascii() and declared.isdigit() and len(declared) > 18:
            # more digits than int() takes (4300) or than any body: too large, said as declared
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body has a {len(declared)}-digit number of bytes; at most "
                        f"{MAX_BODY_BYTES} are accepted")
            self.close_connection = True
            return
        try:
            length = int(declared)
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return
        if length < 0:
            self._error(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length}: it must be a "
                        "non-negative whole number")
            self.close_connection = True
            return
        if length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body has {length} bytes; at most {MAX_BODY_BYTES} are accepted")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if content_type != "application/json":
                raise SubmissionError(f"Content-Type must be application/json, got {content_type!r}")
            sub = validate_submission(self.server.test, parse_json(body))
        except SubmissionError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        try:
            submission, replaced = db.store_trial(self.server.db_path, sub.test_id, sub.listener,
                                                  sub.trial_id, sub.ratings)
        except MushraError as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            return
        self._json(HTTPStatus.OK, {"ok": True, "submission": submission, "stored": len(sub.ratings),
                                   "replaced": replaced, "trial_id": sub.trial_id})


def make_server(test_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                db_path: str | Path | None = None, log: bool = False,
                read_timeout: float = READ_TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS) -> MushraHTTPServer:
    """A server for the test in ``test_dir`` (not yet serving; ``port`` 0 picks a free
    one, see ``.url``). Ratings go to ``db_path`` (default ``TEST_DIR/ratings.sqlite``),
    created with its schema now so that a bad path fails here, as does a database holding
    ratings under this test id for trials or conditions the test does not have (an earlier
    build with the same ``--test-id``). ``read_timeout`` (seconds)
    and ``max_connections`` bound what clients can hold (see the module notes)."""
    if not read_timeout > 0 or max_connections < 1:
        raise MushraError(f"read_timeout must be > 0 and max_connections >= 1, got "
                          f"{read_timeout} and {max_connections}")
    if not host.strip():  # "" would listen on every interface, not on none
        raise MushraError("--host is empty: name the address to listen on (127.0.0.1 by default; "
                          "0.0.0.0 for every interface)")
    test = load_test(test_dir)
    db_file = Path(db_path) if db_path is not None else test.root / DB_FILE
    db.connect(db_file).close()
    # ratings of an earlier build with this test id would resume and count as this one's
    try:
        rated = db.rated_conditions(db_file, test.test_id)
    except MushraError:  # a table that cannot be read: each request answers 500 with the reason
        rated = set()
    test.check_ratings_belong(rated, db_file)
    try:
        return MushraHTTPServer((host, port), test, db_file, log, read_timeout, max_connections)
    except OSError as exc:
        raise MushraError(f"cannot listen on {host}:{port}: {error_reason(exc)}") from exc


def serve_in_thread(server: MushraHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (stop with ``server.shutdown()``)."""
    thread = threading.Thread(target=server.serve_forever, name="mushra-server", daemon=True)
    thread.start()
    return thread
