"""The lines of ``opencodec.eval`` that no other test ran: the refusals of a corrupt MUSHRA
``test.json``, the ratings database's and the rating server's error paths, ``mushra build``'s
and ``mushra serve``'s rarer paths, and the eval report's, metrics' and baselines' checks.
Each test asserts the value or the one-line error a user sees."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.eval.mushra import build as B
from opencodec.eval.mushra.spec import MushraError, load_test

from train_helpers import SR, write_category_set  # tests/ is on sys.path (conftest.py)


def _noise(seed: int = 0, seconds: float = 0.5) -> np.ndarray:
    """Seeded white noise at 0.1 RMS, float32 ``[T]``."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def _set(folder: Path, waves: dict[str, np.ndarray], category: str = "music") -> Path:
    """An eval set: one WAV per entry of ``waves`` listed in ``eval_<category>.jsonl``."""
    return write_category_set(folder, category, waves)


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built test: one music item, hidden reference + anchor (trial t01)."""
    root = tmp_path_factory.mktemp("uncovered_mushra")
    out = root / "test"
    B.build_test(_set(root / "set", {"a": _noise()}), out, items_per_category=1, test_id="u1",
                 quiet=True)
    return out


@pytest.fixture()
def test_copy(built_dir: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`built_dir` that a test may corrupt."""
    return Path(shutil.copytree(built_dir, tmp_path / "test"))


# ------------------------------------------------------------------------------------------
# spec.load_test: a corrupt test.json is one MushraError naming the file and the field
# ------------------------------------------------------------------------------------------
def _dup_trial(d: dict) -> None:
    d["trials"].append(copy.deepcopy(d["trials"][0]))


def _set_cond(k: int, key: str, value: object):
    def mutate(d: dict) -> None:
        d["trials"][0]["conditions"][k][key] = value
    return mutate


def _same_cond(key: str):
    def mutate(d: dict) -> None:
        d["trials"][0]["conditions"][1][key] = d["trials"][0]["conditions"][0][key]
    return mutate


SPEC_ERRORS = [
    ("missing field", lambda d: d.pop("test_id"), r"test\.json: missing field 'test_id'$"),
    ("not an object", lambda d: d.__setitem__("systems", ["x"]),
     r"test\.json: systems\[0\]: expected an object with field 'name', got str$"),
    ("wrong type", lambda d: d.__setitem__("sample_rate", "24000"),
     r"test\.json: field 'sample_rate' has the wrong type \(expected int, got str\)$"),
    ("bool is no int", lambda d: d.__setitem__("channels", True),
     r"field 'channels' has the wrong type \(expected int, got bool\)$"),
    ("bad test id", lambda d: d.__setitem__("test_id", "no spaces"),
     r"test\.json: test_id: 'no spaces' is not a valid id \(letters, digits"),
    ("wrong format", lambda d: d.__setitem__("format", "other/2"),
     r"test\.json: expected format 'opencodec-mushra/1', got 'other/2'$"),
    ("unknown kind", lambda d: d["systems"][1].__setitem__("kind", "magic"),
     r"systems\[1\]: kind 'magic' is not one of \['hidden_reference', 'anchor', 'neural', 'baseline'\]$"),
    ("duplicate system", lambda d: d["systems"][1].__setitem__("name", "hidden-reference"),
     r"systems\[1\]: duplicate system name 'hidden-reference'$"),
    ("no hidden reference", lambda d: d["systems"][0].__setitem__("kind", "anchor"),
     r"test\.json: expected exactly one system of kind 'hidden_reference'$"),
    ("duplicate trial", _dup_trial, r"trials\[1\]: duplicate trial id 't01'$"),
    ("unlisted system", _set_cond(0, "system", "nobody"),
     r"trials\[0\]\.conditions\[0\]: system 'nobody' is not listed under 'systems'$"),
    ("duplicate condition", _same_cond("id"), r"conditions\[1\]: duplicate condition id '\w+'$"),
    ("system twice", _same_cond("system"),
     r"conditions\[1\]: system 'hidden-reference' appears twice in the trial$"),
    ("one condition", lambda d: d["trials"][0].__setitem__("conditions", d["trials"][0]["conditions"][:1]),
     r"trials\[0\]: a trial needs at least 2 conditions, got 1$"),
    ("bad audio path", lambda d: d["trials"][0].__setitem__("reference", "elsewhere/x.wav"),
     r"trials\[0\]: audio path 'elsewhere/x.wav' is not of the form audio/t01/NAME\.wav$"),
    ("no trials", lambda d: d.__setitem__("trials", []), r"test\.json: the test has no trials$"),
    # actual_kbps used to go through float(): a string was a bare ValueError (a traceback from
    # 'mushra serve'/'report'), "nan"/true were taken as a bitrate
    ("kbps string", _set_cond(0, "actual_kbps", "abc"),
     r"conditions\[0\]: field 'actual_kbps' must be null or a finite number >= 0 \(kbit/s\), got 'abc'$"),
    ("kbps list", _set_cond(0, "actual_kbps", [6]), r"'actual_kbps' must be null .*got \[6\]$"),
    ("kbps bool", _set_cond(0, "actual_kbps", True), r"'actual_kbps' must be null .*got True$"),
    ("kbps nan", _set_cond(0, "actual_kbps", float("nan")), r"'actual_kbps' must be null .*got nan$"),
    ("kbps negative", _set_cond(0, "actual_kbps", -1), r"'actual_kbps' must be null .*got -1$"),
]


@pytest.mark.parametrize("label, mutate, message", SPEC_ERRORS, ids=[e[0] for e in SPEC_ERRORS])
def test_load_test_refuses_a_corrupt_test_json(test_copy: Path, label, mutate, message) -> None:
    path = test_copy / "test.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(MushraError, match=message) as info:
        load_test(test_copy)
    assert str(path) in str(info.value)


def test_load_test_reads_a_number_kbps_and_refuses_bad_files(test_copy: Path) -> None:
    path = test_copy / "test.json"
    doc = json.loads(path.read_text())
    doc["trials"][0]["conditions"][0]["actual_kbps"] = 6
    path.write_text(json.dumps(doc))
    assert load_test(test_copy).trials[0].conditions[0].actual_kbps == 6.0
    path.write_text("[1, 2]")
    with pytest.raises(MushraError, match=r"test\.json: expected format 'opencodec-mushra/1', got 'list'$"):
        load_test(test_copy)
    path.write_text("{")
    with pytest.raises(MushraError, match=r"test\.json is not valid JSON: Expecting"):
        load_test(test_copy)
    path.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(MushraError, match=r"test\.json is not valid JSON: 'utf-8' codec"):
        load_test(test_copy)
    path.write_text(json.dumps(doc))
    (test_copy / doc["trials"][0]["reference"]).unlink()
    with pytest.raises(MushraError, match=r"trials\[0\]: audio file .*audio/t01/reference\.wav is missing$"):
        load_test(test_copy)


# ------------------------------------------------------------------------------------------
# db: a database that cannot be opened, written or read is one MushraError
# ------------------------------------------------------------------------------------------
def _foreign_db(path: Path) -> Path:
    """A SQLite file whose ``ratings`` table (and index name) come from some other program:
    it opens, but every query of ours fails (no such column)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE ratings (x INTEGER); CREATE TABLE other (a INTEGER); "
                       "CREATE INDEX ratings_by_test ON other (a);")
    conn.close()
    return path


def _frozen_db(path: Path) -> Path:
    """Our ratings database with a trigger that refuses every insert."""
    from opencodec.eval.mushra import db as D

    conn = D.connect(path)
    conn.execute("CREATE TRIGGER frozen BEFORE INSERT ON ratings "
                 "BEGIN SELECT RAISE(ABORT, 'ratings are frozen'); END")
    conn.commit()
    conn.close()
    return path


def _open_files(path: Path) -> list[str]:
    """This process's file descriptors open on ``path`` (Linux /proc; none seen elsewhere)."""
    import os

    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return []
    return [fd.name for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve())]


def test_db_errors_name_the_file_and_the_reason(tmp_path: Path) -> None:
    from opencodec.eval.mushra import db as D

    with pytest.raises(MushraError, match=rf"^cannot open ratings database {tmp_path}: unable to open"):
        D.connect(tmp_path)  # a folder
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(MushraError, match=r"^cannot open ratings database .*garbage\.sqlite: file is not a database$"):
        D.connect(garbage)
    assert not _open_files(garbage)  # the failed connection was closed, not left to the collector
    foreign = _foreign_db(tmp_path / "foreign.sqlite")
    with pytest.raises(MushraError, match=r"^cannot store ratings in .*foreign\.sqlite: no such column"):
        D.store_trial(foreign, "t", "alice", "t01", [("c1", "s", 50.0)])
    with pytest.raises(MushraError, match=r"^cannot read ratings database .*foreign\.sqlite: no such column"):
        D.load_ratings(foreign)
    with pytest.raises(MushraError, match=r"^cannot read ratings database .*foreign\.sqlite: no such column"):
        D.listener_progress(foreign, "t", "alice")
    frozen = _frozen_db(tmp_path / "frozen.sqlite")
    with pytest.raises(MushraError, match=r"^cannot store ratings in .*frozen\.sqlite: ratings are frozen$"):
        D.store_trial(frozen, "t", "alice", "t01", [("c1", "s", 50.0)])
    assert D.load_ratings(frozen) == []  # the failed transaction left nothing behind


def test_listener_progress_without_a_database_is_empty(tmp_path: Path) -> None:
    from opencodec.eval.mushra import db as D

    assert D.listener_progress(tmp_path / "none.sqlite", "t", "alice") == []
    assert not (tmp_path / "none.sqlite").exists()  # reading progress creates no database


# ------------------------------------------------------------------------------------------
# server: error answers, logging, a busy answer to a client already gone, a port in use
# ------------------------------------------------------------------------------------------
def _raw(server, request: bytes) -> tuple[int, dict]:
    """Send ``request`` bytes; the status code and JSON body of the answer."""
    import socket

    with socket.create_connection(server.server_address[:2], timeout=5) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _submission(test_dir: Path) -> bytes:
    test = load_test(test_dir)
    trial = test.trials[0]
    return json.dumps({"test_id": test.test_id, "trial_id": trial.trial_id, "listener": "alice",
                       "ratings": [{"condition": c.id, "rating": 50} for c in trial.conditions]}).encode()


def _post(body: bytes, content_length: bool = True) -> bytes:
    length = f"Content-Length: {len(body)}\r\n".encode() if content_length else b""
    return (b"POST /api/submit HTTP/1.0\r\nContent-Type: application/json\r\n" + length
            + b"\r\n" + body)


def test_server_database_errors_are_500_with_the_reason(test_copy: Path, tmp_path: Path) -> None:
    """A database that fails a write (submit) or a read (progress) is a JSON 500 naming the
    reason; the progress route used to let the error escape: no answer, a traceback."""
    from opencodec.eval.mushra.server import make_server, serve_in_thread

    server = make_server(test_copy, port=0, db_path=_frozen_db(tmp_path / "frozen.sqlite"))
    serve_in_thread(server)
    try:
        status, body = _raw(server, _post(_submission(test_copy)))
        assert status == 500 and body["ok"] is False
        assert body["error"].endswith("frozen.sqlite: ratings are frozen")
        status, body = _raw(server, _post(b"{}", content_length=False))
        assert (status, body) == (411, {"ok": False, "error": "a Content-Length header is required"})
    finally:
        server.shutdown()
        server.server_close()
    server = make_server(test_copy, port=0, db_path=_foreign_db(tmp_path / "foreign.sqlite"))
    serve_in_thread(server)
    try:
        status, body = _raw(server, b"GET /api/progress?listener=alice HTTP/1.0\r\n\r\n")
        assert status == 500 and body["ok"] is False
        assert "cannot read ratings database" in body["error"] and "no such column" in body["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_server_logs_requests_when_asked(test_copy: Path, capsys: pytest.CaptureFixture) -> None:
    from opencodec.eval.mushra.server import make_server, serve_in_thread

    server = make_server(test_copy, port=0, log=True)
    serve_in_thread(server)
    try:
        status, body = _raw(server, b"GET /nowhere HTTP/1.0\r\n\r\n")
    finally:
        server.shutdown()
        server.server_close()
    assert (status, body) == (404, {"ok": False, "error": "not found: /nowhere"})
    assert '127.0.0.1 - "GET /nowhere HTTP/1.0" 404 -' in capsys.readouterr().err


def test_server_busy_answer_to_a_gone_client_and_a_thread_that_cannot_start(
        test_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every slot taken, a client that has already gone (the 503 cannot be sent) is
    just closed; a connection whose thread cannot start frees its slot again."""
    import socket
    import socketserver

    from opencodec.eval.mushra.server import make_server

    server = make_server(test_copy, port=0, max_connections=1)
    try:
        assert server._slots.acquire(blocking=False)  # the one slot is busy
        ours, theirs = socket.socketpair()
        theirs.close()
        server.process_request(ours, ("127.0.0.1", 1))  # sendall fails: no error escapes
        assert ours.fileno() == -1  # closed
        server._slots.release()

        def no_thread(self, request, client_address):
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", no_thread)
        ours, theirs = socket.socketpair()
        with pytest.raises(RuntimeError, match="can't start new thread"):
            server.process_request(ours, ("127.0.0.1", 1))
        assert server._slots.acquire(blocking=False)  # the slot was given back
        ours.close()
        theirs.close()
    finally:
        server.server_close()


def test_serve_on_a_port_in_use_is_one_line(test_copy: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    from opencodec.eval.mushra.cli import main as mushra_main
    from opencodec.eval.mushra.server import make_server

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(MushraError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: .*in use"):
            make_server(test_copy, port=port)
        assert mushra_main(["serve", str(test_copy), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"opencodec mushra serve: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------------
# mushra report: unknown trials, a category nobody kept rated, a stale plot
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_categories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built test with one music and one clean_speech item (hidden reference + anchor)."""
    root = tmp_path_factory.mktemp("uncovered_two")
    eval_set = _set(root / "set", {"m": _noise(1)}, "music")
    _set(eval_set, {"s": _noise(2)}, "clean_speech")
    B.build_test(eval_set, root / "test", items_per_category=1, test_id="u2", quiet=True)
    return root / "test"


def _rate(db_path: Path, test, listener: str, trial_id: str, hidden: float, other: float) -> None:
    from opencodec.eval.mushra import db as D

    trial = test.trial(trial_id)
    D.store_trial(db_path, test.test_id, listener, trial_id,
                  [(c.id, c.system, hidden if c.system == "hidden-reference" else other)
                   for c in trial.conditions])


def test_report_refuses_ratings_of_an_unknown_trial(test_copy: Path) -> None:
    from opencodec.eval.mushra import db as D
    from opencodec.eval.mushra.report import make_report

    D.store_trial(test_copy / "ratings.sqlite", "u1", "alice", "t99", [("c1", "hidden-reference", 100.0)])
    with pytest.raises(MushraError, match=r"^ratings name trial\(s\) \['t99'\] that test 'u1' does not have$"):
        make_report(test_copy)
    assert not (test_copy / "report").exists()


def test_report_plots_a_category_without_kept_ratings_and_drops_a_stale_plot(
        two_categories: Path, tmp_path: Path) -> None:
    """Only the music trial is rated: the speech group has no mean (left out of the plot,
    '–' in the table); when a later report has nothing to plot the old plot is removed."""
    from opencodec.eval.mushra.report import make_report

    test = load_test(two_categories)
    music = next(t.trial_id for t in test.trials if t.category == "music")
    db_path, out = tmp_path / "r.sqlite", tmp_path / "report"
    _rate(db_path, test, "alice", music, 100.0, 30.0)
    summary = make_report(two_categories, db_path, out)
    assert summary["groups"]["music"]["anchor-3.5kHz"]["mean"] == 30.0
    assert summary["groups"]["clean_speech"]["anchor-3.5kHz"]["mean"] is None
    assert summary["groups"]["clean_speech"]["hidden-reference"]["n"] == 0
    assert summary["plot"] == "mushra.png"
    assert (out / "mushra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _rate(db_path, test, "alice", music, 10.0, 30.0)  # the hidden reference missed: excluded
    summary = make_report(two_categories, db_path, out, force=True)
    assert summary["excluded"] == ["alice"] and summary["plot"] is None
    assert not (out / "mushra.png").exists()
    assert "No plot: no ratings are left after the post-screening." in (out / "mushra_report.md").read_text()


# ------------------------------------------------------------------------------------------
# python -m opencodec.eval.mushra serve: serves until Ctrl-C, then exits 0
# ------------------------------------------------------------------------------------------
def test_module_serve_runs_until_ctrl_c(test_copy: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "opencodec.eval.mushra", "serve", str(test_copy),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("MUSHRA test u1: open http://127.0.0.1:") and line.endswith(
            f"(ratings -> {test_copy / 'ratings.sqlite'}); Ctrl-C stops\n"), line
        url = line.split(" open ")[1].split()[0]
        with urllib.request.urlopen(url + "api/test", timeout=10) as resp:
            assert json.loads(resp.read())["test_id"] == "u1"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == "stopped\n" and out == ""


# ------------------------------------------------------------------------------------------
# mushra build: the anchor's input checks, categories, outputs, options, an install that fails
# ------------------------------------------------------------------------------------------
def test_lowpass_anchor_shapes() -> None:
    with pytest.raises(MushraError, match=r"^anchor input must be shaped \[C, T\], got \(100,\)$"):
        B.lowpass_anchor(np.zeros(100, np.float32), SR)
    empty = B.lowpass_anchor(np.zeros((2, 0), np.float32), SR)
    assert empty.shape == (2, 0) and empty.dtype == np.float32
    one = B.lowpass_anchor(np.full((1, 1), 0.5, np.float32), SR)
    assert one.shape == (1, 1) and one[0, 0] == pytest.approx(0.5)  # a constant passes a low-pass


def test_find_categories_other_names_and_empty_manifests(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    eval_set = _set(tmp_path / "set", {"a": _noise()}, "birdsong")
    (eval_set / "eval_wind.jsonl").write_text("")
    assert B.find_categories(eval_set) == ["birdsong"]  # none of the standard four: every eval_*
    assert capsys.readouterr().err == f"note: {eval_set / 'eval_wind.jsonl'} is empty; category 'wind' skipped\n"
    (eval_set / "eval_birdsong.jsonl").write_text("")
    with pytest.raises(MushraError, match=r"^every eval_<category>\.jsonl manifest under .* is empty$"):
        B.find_categories(eval_set)
    for manifest in eval_set.glob("eval_*.jsonl"):
        manifest.unlink()
    with pytest.raises(MushraError, match=r"^no eval_<category>\.jsonl manifests under "):
        B.find_categories(eval_set)
    with pytest.raises(MushraError, match=r"^no eval_<category>\.jsonl manifests under "):
        B.build_test(eval_set, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    ({"items_per_category": 0}, r"^--items-per-category must be at least 1, got 0$"),
    ({"max_seconds": 0.0}, r"^--max-seconds must be a positive number, got 0\.0$"),
    ({"max_seconds": float("nan")}, r"^--max-seconds must be a positive number, got nan$"),
    ({"baselines": ["opus6", "opus6"]},
     r"^duplicate systems \['opus-6kbps'\]: the same model or baseline is given twice$"),
])
def test_build_refuses_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    with pytest.raises(MushraError, match=message):
        B.build_test(eval_set, tmp_path / "out", quiet=True, **options)
    assert not (tmp_path / "out").exists()


def test_build_output_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    (tmp_path / "file").write_text("x")
    with pytest.raises(MushraError, match=rf"^output {tmp_path / 'file'} exists and is not a folder$"):
        B.build_test(eval_set, tmp_path / "file", quiet=True)
    with pytest.raises(MushraError, match=rf"^cannot create {tmp_path / 'file' / 'test'}: "
                                          rf"{tmp_path / 'file'} is not a folder$"):
        B.build_test(eval_set, tmp_path / "file" / "test", items_per_category=1, quiet=True)
    assert (tmp_path / "file").read_text() == "x"


def test_build_into_a_folder_it_may_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build folder cannot be made (no permission: the tests may run as root, where a
    chmod would not stop them, so mkdir is made to fail): one line naming OUT and the reason."""
    eval_set = _set(tmp_path / "set", {"a": _noise()})

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(MushraError, match=rf"^cannot write {tmp_path / 'out'}: Permission denied$"):
        B.build_test(eval_set, tmp_path / "out", items_per_category=1, quiet=True)


def test_build_keeps_an_unreadable_ratings_database(test_copy: Path, tmp_path: Path) -> None:
    """A ratings.sqlite that is not a database may hold ratings: never replaced, even with -f."""
    (test_copy / "ratings.sqlite").write_bytes(b"not a database" * 100)
    eval_set = _set(tmp_path / "set", {"b": _noise(3)})
    with pytest.raises(MushraError, match=r"holds ratings \(.*ratings\.sqlite\); refusing to replace it"):
        B.build_test(eval_set, test_copy, items_per_category=1, force=True, quiet=True)
    assert load_test(test_copy).test_id == "u1"


def test_build_restores_the_old_test_when_the_new_one_cannot_be_moved_in(
        test_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    eval_set = _set(tmp_path / "set", {"b": _noise(3)})
    real, calls = os.replace, []

    def new_test_fails(src, dst):  # os.replace, failing on moving the new build onto OUT
        if Path(dst) == test_copy:
            calls.append(Path(src).name.split("-")[0])
            if calls[-1] == ".test.building":
                raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(B.os, "replace", new_test_fails)
    with pytest.raises(OSError, match="No space left on device"):
        B.build_test(eval_set, test_copy, items_per_category=1, test_id="new", force=True, quiet=True)
    assert calls == [".test.building", ".test.old"]  # the old test moved back
    assert load_test(test_copy).test_id == "u1"
    assert sorted(p.name for p in test_copy.parent.iterdir()) == ["set", "test"]  # no leftovers


def _tiny_model(path: Path, name: str, sample_rate: int) -> str:
    import torch

    from opencodec import EncodecConfig, EncodecModel
    from opencodec.pretrained import save_model

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name=name, sample_rate=sample_rate, n_filters=4, dimension=16,
                                       lstm=0, n_q=4, target_bandwidths=[1.5, 3.0]))
    return str(save_model(model, path))


def test_models_of_different_rates_are_refused(tmp_path: Path) -> None:
    from opencodec.eval.report import run_eval
    from opencodec.eval.systems import EvalReportError

    a = _tiny_model(tmp_path / "a.safetensors", "tiny_a", 24000)
    b = _tiny_model(tmp_path / "b.safetensors", "tiny_b", 16000)
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    disagree = r"models disagree on sample rate/channels: \[\(16000, 1\), \(24000, 1\)\]$"
    with pytest.raises(MushraError, match=disagree):
        B.build_test(eval_set, tmp_path / "out", models=[a, b], quiet=True)
    with pytest.raises(EvalReportError, match=disagree):
        run_eval([a, b], None, [], eval_set, tmp_path / "eval", metrics=["si_snr"], quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()


# ------------------------------------------------------------------------------------------
# opencodec eval: the report's request checks, results.jsonl edge cases, the systems
# ------------------------------------------------------------------------------------------
def test_eval_cli_says_where_it_wrote_unless_quiet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main

    eval_set = _set(tmp_path / "set", {"a": _noise()})
    out = tmp_path / "out"
    args = ["eval", "--set", str(eval_set), "--out", str(out), "--baselines", "opus6", "--metrics", "si_snr"]
    assert main(args) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"wrote {out / 'report.md'} (1 rows)"
    assert (out / "report.md").is_file()


def test_eval_cli_with_nothing_to_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main

    eval_set = _set(tmp_path / "set", {"a": _noise()})
    assert main(["eval", "--set", str(eval_set), "--out", str(tmp_path / "out"), "--metrics", "si_snr"]) == 1
    assert capsys.readouterr().err == ("opencodec eval: error: nothing to evaluate: give --models "
                                       "and/or --baselines\n")
    assert not (tmp_path / "out").exists()


def test_run_eval_request_errors(tmp_path: Path) -> None:
    from opencodec.eval.report import run_eval
    from opencodec.eval.systems import EvalReportError

    eval_set = _set(tmp_path / "set", {"a": _noise()})
    with pytest.raises(EvalReportError, match=r"^unknown metric\(s\) \['bogus'\]; choose from \['si_snr', "):
        run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr", "bogus"], quiet=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EvalReportError, match=rf"^--out {tmp_path / 'file'} exists and is not a folder$"):
        run_eval([], None, ["opus6"], eval_set, tmp_path / "file", metrics=["si_snr"], quiet=True)
    (eval_set / "eval_music.jsonl").rename(eval_set / "music.jsonl")  # no eval_*.jsonl left
    with pytest.raises(EvalReportError, match=rf"^no eval_<category>\.jsonl manifests under {eval_set}$"):
        run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert not (tmp_path / "out").exists()


def test_run_eval_where_every_system_fails_names_the_first_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.eval import baselines as BL
    from opencodec.eval.report import run_eval
    from opencodec.eval.systems import EvalReportError

    real = BL.OpusCodec.roundtrip

    def boom(self, wav, sample_rate):  # codes the silence of the up-front check, no item
        if not np.any(wav):
            return real(self, wav, sample_rate)
        raise BL.BaselineError("boom")

    monkeypatch.setattr(BL.OpusCodec, "roundtrip", boom)
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    with pytest.raises(EvalReportError, match=rf"^no item of {eval_set} could be scored: every system "
                                              r"failed on every item \(1 failure\(s\); first: "
                                              r"opus-6kbps on 'a': BaselineError: boom\)$"):
        run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)


def _row(**extra: object) -> dict:
    return {"category": "music", "item_id": "a", "system": "opus-6kbps", "kind": "baseline",
            "family": "opus", "nominal_kbps": 6.0, **extra}


def test_results_file_edge_cases(tmp_path: Path) -> None:
    from opencodec.eval.results_file import ResultsFile, read_results, repair_results
    from opencodec.eval.systems import EvalReportError

    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row(nominal_kbps=True)) + "\n" + json.dumps(_row()) + "\n")
    with pytest.raises(EvalReportError, match=r"results\.jsonl:1 is not a result row \(an edited or foreign file\?\)"):
        repair_results(path)
    # a last row complete but for its newline is kept, and the newline added (no warning)
    path.write_text(json.dumps(_row()) + "\n" + json.dumps(_row(item_id="b")))
    rows, warning = repair_results(path)
    assert [r["item_id"] for r in rows] == ["a", "b"] and warning is None
    assert path.read_text() == json.dumps(_row()) + "\n" + json.dumps(_row(item_id="b")) + "\n"
    # read_results skips blank and cut lines
    path.write_text(json.dumps(_row()) + "\n\n  \n" + '{"category": "mus' + "\n" + json.dumps(_row(item_id="c")) + "\n")
    assert [r["item_id"] for r in read_results(path)] == ["a", "c"]
    results = ResultsFile(tmp_path / "new" / "results.jsonl")
    results.write([])
    results.close()
    assert not (tmp_path / "new").exists()  # nothing to write: no folder, no file


def test_row_scored_metrics_of_an_older_row() -> None:
    """A row written before ``scored_metrics`` existed: its ``metrics`` keys say what it holds."""
    from opencodec.eval.systems import SCORED_KEY, row_scored_metrics

    assert row_scored_metrics({SCORED_KEY: ["mel", "si_snr"], "metrics": {}}) == {"mel", "si_snr"}
    assert row_scored_metrics({"metrics": {"si_snr": 3.0, "stoi": None}}) == {"si_snr", "stoi"}
    assert row_scored_metrics({"metrics": None}) == set()
    assert row_scored_metrics({}) == set()


def test_versus_opus_cell_of_a_metric_one_side_lacks() -> None:
    from opencodec.eval.report_writer import versus_opus

    def system(kind: str, family: str, si_snr: float, visqol: float | None) -> dict:
        return {"kind": kind, "family": family, "nominal_kbps": 6.0, "actual_kbps": {"mean": 6.1},
                "metrics": {"si_snr": {"mean": si_snr, "ci95": None},
                            "visqol": {"mean": visqol, "ci95": None}}}

    summary = {"music": {"ours@6kbps": system("neural", "ours", 4.0, None),
                         "opus-6kbps": system("baseline", "opus", 5.0, 3.0)}}
    lines = versus_opus(summary, ["visqol", "si_snr", "stoi"])
    row = next(line for line in lines if line.startswith("| music |"))
    # ViSQOL undefined for ours, STOI for both: '–'
    assert row == ("| music | ours@6kbps | opus-6kbps | 6.10 vs 6.10 | – | 4.00 vs 5.00: worse "
                   "(no interval: fewer than 2 items) | – |")


def test_build_systems_defaults_and_refusals(tmp_path: Path) -> None:
    from opencodec.eval.lineup import build_systems
    from opencodec.eval.systems import EvalReportError

    model = _tiny_model(tmp_path / "a.safetensors", "tiny_a", 24000)
    lineup = build_systems([model], None, ["opus6"], 16000, 2)  # the model's rate and channels win
    assert [s.name for s in lineup.systems] == ["tiny_a@1.5kbps", "tiny_a@3kbps", "opus-6kbps"]
    assert (lineup.sample_rate, lineup.channels, lineup.bandwidth_notes) == (24000, 1, [])
    with pytest.raises(EvalReportError, match=r"^nothing to evaluate: give --models and/or --baselines$"):
        build_systems([], None, [], 24000, 1)


def test_a_baseline_whose_encoder_refuses_the_format_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder error that is not a BaselineError (PyAV's own) in the up-front check is
    one EvalReportError naming the baseline, the format and the error's type."""
    from opencodec.eval import baselines as BL
    from opencodec.eval.lineup import check_baselines
    from opencodec.eval.systems import EvalReportError

    def refuses(self, wav, sample_rate):
        raise RuntimeError("Invalid argument")

    monkeypatch.setattr(BL.OpusCodec, "roundtrip", refuses)
    with pytest.raises(EvalReportError, match=r"^baseline 'opus6' cannot code 24000 Hz, 1 channel\(s\): "
                                              r"RuntimeError: Invalid argument$"):
        check_baselines(["opus6"], 24000, 1)


# ------------------------------------------------------------------------------------------
# metrics, ViSQOL, PESQ and the baselines: bad arguments and the scorers' own failures
# ------------------------------------------------------------------------------------------
def _pair_of_signals(seconds: float = 0.3, rate: int = SR) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    ref = (rng.standard_normal((1, int(seconds * rate))) * 0.1).astype(np.float32)
    return (ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32), ref


def test_metric_argument_checks() -> None:
    from opencodec.eval import metrics as M

    est, ref = _pair_of_signals()
    with pytest.raises(M.MetricError, match=r"^est is empty \(shape \(1, 0\)\)$"):
        M.si_snr(np.zeros((1, 0)), np.zeros((1, 0)))
    with pytest.raises(M.MetricError, match=r"^est is empty \(shape \(0, 5\)\)$"):
        M.si_snr(np.zeros((0, 5)), np.zeros((0, 5)))
    with pytest.raises(M.MetricError, match=r"^need 0 <= f_min < f_max <= sample_rate/2, got -1\.0, 12000\.0$"):
        M.mel_filterbank(SR, 512, 64, f_min=-1.0)
    with pytest.raises(M.MetricError, match=r"got 0\.0, 13000\.0$"):
        M.mel_filterbank(SR, 512, 64, f_max=13000)
    for call in (lambda: M.mel_distance(est, ref, SR, n_ffts=()), lambda: M.stft_distance(est, ref, n_ffts=())):
        with pytest.raises(M.MetricError, match=r"^n_ffts must name at least one window size$"):
            call()
    # a window below 4 samples (hop n_fft // 4 of 0) used to be a bare torch RuntimeError, and
    # n_mels=0 a NaN distance
    for n in (0, 3, -4, 512.5, True, "512"):
        with pytest.raises(M.MetricError, match=rf"^window sizes \(n_fft\) must be whole numbers >= 4, got {n!r}$"):
            M.stft_distance(est, ref, n_ffts=(512, n))
        with pytest.raises(M.MetricError, match=r"^window sizes \(n_fft\) must be whole numbers >= 4"):
            M.mel_distance(est, ref, SR, n_ffts=(n,))
    with pytest.raises(M.MetricError, match=r"^n_mels must be a whole number >= 1, got 0$"):
        M.mel_distance(est, ref, SR, n_mels=0)
    assert M.stft_distance(est, ref, n_ffts=(4,)) > 0.0 and M.mel_distance(est, ref, SR, n_ffts=(4,), n_mels=1) > 0.0
    # int-like window sizes (a whole float, numpy and 0-d torch integers) are the int's
    exact = M.stft_distance(est, ref, n_ffts=(512, 64))
    for same in ((512.0, 64), (np.int64(512), 64), (torch.tensor(512), 64)):
        assert M.stft_distance(est, ref, n_ffts=same) == exact


def test_pesq_library_failures_are_metric_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PESQ library's own refusals (no utterance found, any other failure) are one
    error naming the channel (no input found here makes it refuse: it is made to)."""
    import pesq

    from opencodec.eval import metrics as M

    est, ref = _pair_of_signals(0.5, 16000)

    def no_utterances(*args):
        raise pesq.NoUtterancesError("No utterances detected")

    monkeypatch.setattr(pesq, "pesq", no_utterances)
    with pytest.raises(M.SilentSignalError, match=r"^PESQ found no utterances in channel 0 \(silent or too "
                                                  r"quiet\): No utterances detected$"):
        M.pesq_wb(est, ref, 16000)

    def fails(*args):
        raise pesq.PesqError("Buffer too short")

    monkeypatch.setattr(pesq, "pesq", fails)
    with pytest.raises(M.MetricError, match=r"^PESQ failed on channel 0: Buffer too short$"):
        M.pesq_wb(est, ref, 16000)


def test_visqol_argument_checks_and_scorer_failures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib
    import sys
    import sysconfig
    import types

    from opencodec.eval.metrics import MetricError

    V = importlib.import_module("opencodec.eval.visqol")
    est, ref = _pair_of_signals(V.visqol_min_seconds("speech") + 0.1)
    with pytest.raises(MetricError, match=r"^mode must be 'audio' or 'speech', got 'music'$"):
        V.visqol_min_seconds("music")
    with pytest.raises(MetricError, match=r"^channels must be 'mean' or 'downmix', got 'left'$"):
        V.visqol(est, ref, SR, mode="speech", channels="left")

    class VisqolError(Exception):
        pass

    def score(*args):
        raise VisqolError("internal alignment failed")

    fake = types.SimpleNamespace(_score=score, VisqolError=VisqolError)
    monkeypatch.setattr(V, "_NATIVE", fake)
    with pytest.raises(MetricError, match=r"^ViSQOL failed on channel 0: internal alignment failed$"):
        V.visqol(est, ref, SR, mode="speech")
    # audio-samples-qoe absent: ImportError with the install command
    monkeypatch.setattr(V, "_NATIVE", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": str(tmp_path), "platlib": str(tmp_path)})
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(ImportError, match=r"^ViSQOL needs the native scorer of audio-samples-qoe: "
                                          r"pip install --no-deps audio-samples-qoe==0\.1\.2$"):
        V.load_native_scorer()


def test_baseline_input_and_opus_packet_modes() -> None:
    from opencodec.eval import baselines as BL

    wav = np.zeros((1, 960), np.float32)
    wav[0, 5] = np.nan
    with pytest.raises(BL.BaselineError, match=r"^wav contains NaN or infinite samples$"):
        BL.opus_roundtrip(wav, 48000, 12)
    # RFC 6716 3.1: the TOC byte's top five bits are the configuration (0-11 SILK NB/MB/WB,
    # 12-15 hybrid SWB/FB, 16-31 CELT NB/WB/SWB/FB, four each); an empty packet has no TOC
    packets = [bytes([c << 3]) for c in (0, 4, 8, 12, 14, 16, 20, 24, 31)] + [b""]
    assert BL._opus_bandwidths(packets) == {"SILK-NB", "SILK-MB", "SILK-WB", "HYBRID-SWB", "HYBRID-FB",
                                            "CELT-NB", "CELT-WB", "CELT-SWB", "CELT-FB"}


def test_an_empty_item_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    from opencodec.eval.scoring import ItemReadError, load_reference

    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    task = {"row": {"path": str(tmp_path / "empty.wav")}, "sample_rate": SR, "channels": 1}
    with pytest.raises(ItemReadError, match=r"^cannot read .*empty\.wav: the file holds no audio samples$"):
        load_reference(task)


# ------------------------------------------------------------------------------------------
# workers: a pool of two processes scores every task and writes each item's rows
# ------------------------------------------------------------------------------------------
def _rows_of(task: dict) -> list[dict]:  # scored in a worker process (picklable: module level)
    import os

    return [{"item_id": task["item_id"], "pid": os.getpid()}]


def test_a_pool_of_workers_writes_every_tasks_rows(tmp_path: Path) -> None:
    import os

    from opencodec.eval.results_file import ResultsFile
    from opencodec.eval.workers import run_tasks

    tasks = [{"category": "music", "item_id": f"i{k}"} for k in range(3)]
    results = tmp_path / "out" / "results.jsonl"
    assert run_tasks(tasks, ResultsFile(results), (), (), 2, True, _rows_of) == []
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == ["i0", "i1", "i2"]
    assert os.getpid() not in {r["pid"] for r in rows}  # scored in the workers


@pytest.mark.parametrize("metric", ["visqol", "mel"])  # higher and lower is better
def test_versus_opus_calls_equal_means_equal(metric: str) -> None:
    """Exactly equal means (no pairing) and an exactly zero mean paired difference are
    "equal", never "better" or "worse" (whichever way the metric points)."""
    from opencodec.eval.report_writer import versus_opus

    def system(kind: str, family: str, mean: float) -> dict:
        return {"kind": kind, "family": family, "nominal_kbps": 6.0, "actual_kbps": {"mean": 6.0},
                "metrics": {metric: {"mean": mean, "ci95": 0.1}}}

    summary = {"speech": {"ours@6kbps": system("neural", "ours", 2.5),
                          "opus-6kbps": system("baseline", "opus", 2.5)}}
    row = next(line for line in versus_opus(summary, [metric]) if line.startswith("| speech |"))
    assert row.endswith("| 2.50 vs 2.50: equal (intervals overlap) |")
    paired = {"speech": {"ours@6kbps": {metric: {"mean": 0.0, "ci95": 0.05, "wins": 3, "n": 6}}}}
    row = next(line for line in versus_opus(summary, [metric], paired) if line.startswith("| speech |"))
    assert row.endswith("| 2.50 vs 2.50: +0.00 ± 0.05, equal (not established), 3/6 items |")
    summary["speech"]["ours@6kbps"]["metrics"][metric]["mean"] = 2.6  # one step away: a direction
    row = next(line for line in versus_opus(summary, [metric]) if line.startswith("| speech |"))
    assert ("better" if metric == "visqol" else "worse") in row
