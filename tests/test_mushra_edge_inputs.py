"""``opencodec mushra`` as an adversarial user drives it: request bodies and headers that
Python's parsers cannot read (deep nesting, numbers of thousands of digits), audio removed
while the server runs, ratings left in a shared ``--db`` by an earlier build with the same
``--test-id``, an empty ``--host``, a ``--max-seconds`` shorter than one sample, a category
named twice, a negative ``--seed``, and ``report`` never writing into the database it reads."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.eval.mushra import build as B
from opencodec.eval.mushra import db as D
from opencodec.eval.mushra.cli import main as mushra_main
from opencodec.eval.mushra.report import make_report
from opencodec.eval.mushra.server import (MAX_BODY_BYTES, SubmissionError, make_server, parse_json,
                                          parse_range, serve_in_thread)
from opencodec.eval.mushra.spec import MushraError

SR = 24000


def _set(folder: Path, names: str = "abcd") -> Path:
    """An eval set of short noise items (one category, music)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        wav = np.random.default_rng(k).standard_normal(SR // 4) * 0.1
        sf.write(folder / f"{name}.wav", wav.astype(np.float32), SR)
    (folder / "eval_music.jsonl").write_text("".join(json.dumps({"path": f"{n}.wav"}) + "\n"
                                                     for n in names))
    return folder


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    return _set(tmp_path_factory.mktemp("edge_set"))


@pytest.fixture()
def test_dir(eval_set, tmp_path) -> Path:
    out = tmp_path / "test"
    B.build_test(eval_set, out, items_per_category=2, seed=0, test_id="edge", quiet=True)
    return out


@pytest.fixture()
def server(test_dir):
    srv = make_server(test_dir, port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _exchange(server, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a fresh connection; (HTTP status, body) of the answer (status 0:
    the server closed the connection without answering)."""
    with socket.create_connection(server.server_address[:2], timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    if not reply:
        return 0, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post(server, body: bytes) -> tuple[int, bytes]:
    return _exchange(server, b"POST /api/submit HTTP/1.0\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)


# ------------------------------------------------------------------------------------------
# Server: bodies and headers the parsers cannot read are a 400/413/416 with a reason
# ------------------------------------------------------------------------------------------
def test_deeply_nested_json_body_is_400_not_a_dropped_connection(server):
    status, body = _post(server, b"[" * 60000)
    assert status == 400
    assert json.loads(body) == {"ok": False, "error": "the body is JSON nested too deeply to read"}
    with pytest.raises(SubmissionError, match="nested too deeply"):
        parse_json(b"[" * 60000)


def test_rating_of_5000_digits_is_400_not_a_dropped_connection(server):
    test = server.test
    trial = test.trials[0]
    body = ('{"test_id": "edge", "trial_id": "%s", "listener": "x", "ratings": [{"condition": "%s", '
            '"rating": %s}]}' % (trial.trial_id, trial.conditions[0].id, "9" * 5000)).encode()
    status, reply = _post(server, body)
    assert status == 400
    assert json.loads(reply)["error"] == "the body holds a number of more than 4300 digits"
    # NaN stays reported as itself, not rewrapped as a parser failure
    with pytest.raises(SubmissionError, match=r"^invalid JSON number NaN"):
        parse_json(b'{"rating": NaN}')


def test_range_with_a_5000_digit_position_is_416(server):
    assert parse_range("bytes=" + "9" * 5000 + "-", 100) is None
    assert parse_range("bytes=0-" + "9" * 5000, 100) == (0, 99)
    assert parse_range("bytes=-" + "9" * 5000, 100) == (0, 99)
    trial = server.test.trials[0]
    url = f"/audio/{trial.trial_id}/reference.wav".encode()
    status, _ = _exchange(server, b"GET " + url + b" HTTP/1.0\r\nRange: bytes=" + b"9" * 5000
                          + b"-\r\n\r\n")
    assert status == 416
    status, body = _exchange(server, b"GET " + url + b" HTTP/1.0\r\nRange: bytes=-" + b"9" * 5000
                             + b"\r\n\r\n")
    assert status == 206 and body[:4] == b"RIFF"


def test_content_length_of_5000_digits_is_413(server):
    status, body = _exchange(server, b"POST /api/submit HTTP/1.0\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert status == 413
    assert json.loads(body)["error"] == (f"the body has a 5000-digit number of bytes; at most "
                                         f"{MAX_BODY_BYTES} are accepted")


def test_audio_removed_while_serving_is_a_500_naming_the_file(server, test_dir):
    trial = server.test.trials[0]
    cond = trial.conditions[0]
    (test_dir / cond.file).unlink()
    status, body = _exchange(server, f"GET /audio/{cond.file.split('/', 1)[1]} HTTP/1.0\r\n\r\n".encode())
    assert status == 500
    assert json.loads(body) == {"ok": False, "error": f"cannot read audio file {Path(cond.file).name}: "
                                                      "No such file or directory"}


def test_serve_refuses_an_empty_host(test_dir, capsys):
    # "" would listen on every interface (0.0.0.0), not on the default 127.0.0.1
    with pytest.raises(MushraError, match="--host is empty"):
        make_server(test_dir, host=" ", port=0).server_close()
    assert mushra_main(["serve", str(test_dir), "--port", "0", "--host", ""]) == 1
    err = capsys.readouterr().err
    assert err == ("opencodec mushra serve: error: --host is empty: name the address to listen on "
                   "(127.0.0.1 by default; 0.0.0.0 for every interface)\n")


# ------------------------------------------------------------------------------------------
# A shared --db with ratings of an earlier build under the same --test-id
# ------------------------------------------------------------------------------------------
def test_ratings_of_an_earlier_build_with_the_same_test_id_are_refused(eval_set, tmp_path, capsys):
    shared = tmp_path / "shared.sqlite"
    old = B.build_test(eval_set, tmp_path / "test", items_per_category=2, seed=0, test_id="study",
                       quiet=True)
    for trial in old.trials:
        D.store_trial(shared, "study", "ann", trial.trial_id,
                      [(c.id, c.system, 100.0 if c.system == "hidden-reference" else 10.0)
                       for c in trial.conditions])
    new = B.build_test(eval_set, tmp_path / "test", items_per_category=2, seed=1, test_id="study",
                       quiet=True, force=True)
    assert [t.item_id for t in new.trials] != [t.item_id for t in old.trials]  # other items
    # serving would show ann these (other) trials as done; the report would count her
    # ratings of other items as ratings of these
    with pytest.raises(MushraError, match=r"holds ratings of test 'study' for trial/condition ids "
                                          r"this build of it does not have \(t01/"):
        make_server(new.root, port=0, db_path=shared)
    assert mushra_main(["report", str(new.root), "--db", str(shared)]) == 1
    assert "earlier build with the same test id" in capsys.readouterr().err
    assert not (new.root / "report").exists()
    # the same build's own ratings are fine
    trial = new.trials[0]
    clean = tmp_path / "clean.sqlite"
    D.store_trial(clean, "study", "ann", trial.trial_id,
                  [(c.id, c.system, 95.0) for c in trial.conditions])
    srv = make_server(new.root, port=0, db_path=clean)
    srv.server_close()
    assert make_report(new.root, clean, tmp_path / "r")["n_ratings"] == len(trial.conditions)


# ------------------------------------------------------------------------------------------
# report reads the database without writing into it
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["empty.sqlite", "odd #name? x.sqlite"])
def test_report_does_not_write_into_a_database_without_ratings(test_dir, tmp_path, name, capsys):
    other = tmp_path / name
    other.write_bytes(b"")
    assert mushra_main(["report", str(test_dir), "--db", str(other)]) == 1
    assert "no such table: ratings" in capsys.readouterr().err
    assert other.read_bytes() == b""  # no schema written into it
    foreign = tmp_path / "app.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    conn.close()
    before = foreign.read_bytes()
    assert mushra_main(["report", str(test_dir), "--db", str(foreign)]) == 1
    assert foreign.read_bytes() == before


# ------------------------------------------------------------------------------------------
# build: options that would make empty or duplicated trials, or a traceback
# ------------------------------------------------------------------------------------------
def test_build_refuses_max_seconds_shorter_than_one_sample(eval_set, tmp_path, capsys):
    out = tmp_path / "t"
    assert mushra_main(["build", "--set", str(eval_set), "--out", str(out), "-q", "-n", "1",
                        "--max-seconds", "1e-9"]) == 1
    assert capsys.readouterr().err == ("opencodec mushra build: error: --max-seconds 1e-09 is shorter "
                                       "than one sample at 24000 Hz: every excerpt would be empty\n")
    assert not out.exists()
    # one sample is enough to be accepted
    B.build_test(eval_set, out, items_per_category=1, max_seconds=1 / SR, quiet=True)
    x, _ = sf.read(out / "audio" / "t01" / "reference.wav")
    assert x.shape == (1,)


def test_build_refuses_a_category_named_twice(eval_set, tmp_path, capsys):
    out = tmp_path / "t"
    assert mushra_main(["build", "--set", str(eval_set), "--out", str(out), "-q", "-n", "1",
                        "--categories", "music", "music"]) == 1
    assert capsys.readouterr().err == ("opencodec mushra build: error: --categories names 'music' "
                                       "more than once\n")
    assert not out.exists()


def test_build_refuses_a_negative_seed_in_one_line(eval_set, tmp_path, capsys):
    out = tmp_path / "t"
    assert mushra_main(["build", "--set", str(eval_set), "--out", str(out), "-q", "-n", "1",
                        "--seed", "-1"]) == 1
    assert capsys.readouterr().err == ("opencodec mushra build: error: --seed must be a whole number "
                                       ">= 0, got -1\n")
    assert not out.exists()
    with pytest.raises(MushraError, match="--seed must be a whole number >= 0"):
        B.select_items(eval_set, ["music"], 1, -3)
    assert B.select_items(eval_set, ["music"], 1, np.int64(2)) == B.select_items(eval_set, ["music"], 1, 2)


def test_build_refuses_a_manifest_that_lists_one_item_twice(tmp_path):
    """``opencodec eval`` refuses a manifest whose rows share an item id (results are keyed by
    it); ``mushra build`` took it, and could make two trials of one excerpt. Same check now."""
    folder = _set(tmp_path / "set", "ab")
    (folder / "eval_music.jsonl").write_text("".join(json.dumps({"path": f"{n}.wav"}) + "\n" for n in "aba"))
    with pytest.raises(MushraError, match=r"eval_music\.jsonl: 1 item id\(s\) are shared by several rows \('a': "):
        B.select_items(folder, ["music"], 2, seed=0)
    (folder / "eval_music.jsonl").write_text("".join(json.dumps({"path": f"{n}.wav"}) + "\n" for n in "ab"))
    assert [Path(r["path"]).name for r in B.select_items(folder, ["music"], 2, seed=0)["music"]] == ["a.wav", "b.wav"]
