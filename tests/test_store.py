"""Locks and identities of the store; concurrent jobs train a shared seed once."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from splitsweep.records import append_rows, read_rows
from splitsweep.identity import signature
from splitsweep.store import FileLock
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, segments

T = TOKENS_PER_STEP


def test_signature_is_stable_and_order_free():
    assert signature({"a": 1, "b": [1, 2]}) == signature({"b": [1, 2], "a": 1})
    assert signature({"a": 1}) != signature({"a": 2})


def test_lock_excludes_and_breaks_stale_holders(tmp_path):
    # Margins for a loaded machine: the holder keeps its lock longer than stale_s (so only its heartbeat,
    # every stale_s / 4, keeps it), yet a heartbeat thread would have to stall for 3/4 of stale_s, over 2 s,
    # for a contender to break a live lock.
    stale_s, hold_s = 3.0, 4.0
    path = tmp_path / "x.lock"
    held = FileLock(path, stale_s=stale_s).acquire()
    got = []

    def contender():
        with FileLock(path, stale_s=stale_s, poll_s=0.02):
            got.append(time.monotonic())

    t = threading.Thread(target=contender)
    start = time.monotonic()
    t.start()
    time.sleep(hold_s)
    assert not got  # the heartbeat keeps a live holder's lock fresh past stale_s
    held.release()
    t.join(30)
    assert got and got[0] - start >= hold_s
    # A holder that died (no heartbeat) is broken after stale_s.
    path.write_text("dead-host:1:x")
    os.utime(path, (time.time() - 10 * stale_s, time.time() - 10 * stale_s))
    with FileLock(path, stale_s=stale_s, poll_s=0.02):
        assert path.read_text() != "dead-host:1:x"


def test_records_append_once_and_ignore_torn_lines(tmp_path):
    rows = [{"run_id": "r1", "eval_domain": d, "eval_loss": 1.0} for d in ("a", "b")]
    assert append_rows(tmp_path, rows) is True
    assert append_rows(tmp_path, rows) is False
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"run_id": "r2", "eval_dom')  # a writer killed mid-line
    assert read_rows(tmp_path) == rows
    with pytest.raises(ValueError):
        append_rows(tmp_path, rows + [{"run_id": "other"}])


def test_concurrent_jobs_train_their_shared_seed_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(tmp_path), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "splitsweep", *TINY, f"split.pretrain_tokens={24 * T}",
                               f"split.special_tokens={2 * T}", f"split.expert_domain={d}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for d in ("d0", "d1", "mixture")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    segs = segments(tmp_path)
    assert [(s["from_step"], s["to_step"]) for s in segs] == [(0, 24)], segs
    rows = read_rows(tmp_path / "sweeps" / "test")
    assert len(rows) == 15 and len({r["seed_id"] for r in rows}) == 1
    assert sorted(r["tokens_trained"] for r in rows[::5]) == [2 * T, 2 * T, 26 * T]


def test_a_table_keyed_by_evaluation_keeps_one_copy_of_each_and_reads_legacy_rows(tmp_path):
    # downstream.jsonl: rows of one run under several eval_ids; rows written before eval_id count under run_id.
    from splitsweep.records import append_rows, is_recorded, read_rows

    legacy = [{"run_id": "r1", "task": "t", "value": 0.5}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))  # written by an older version
    first = [{"run_id": "r1", "eval_id": "e1", "task": "t", "value": 0.6}]
    second = [{"run_id": "r1", "eval_id": "e2", "task": "u", "value": 0.7}]
    assert append_rows(tmp_path, first, "d.jsonl", key="eval_id")
    assert not append_rows(tmp_path, first, "d.jsonl", key="eval_id")
    assert append_rows(tmp_path, second, "d.jsonl", key="eval_id")
    assert [is_recorded(tmp_path, k, "d.jsonl", key="eval_id") for k in ("r1", "e1", "e2", "e3")] == \
        [True, True, True, False]
    assert [r["value"] for r in read_rows(tmp_path / "d.jsonl")] == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="one eval_id"):
        append_rows(tmp_path, first + second, "d.jsonl", key="eval_id")


def test_build_once_builds_one_file_or_directory_once_and_leaves_nothing_when_it_fails(tmp_path):
    from splitsweep.store import build_once

    calls = []

    def slow_file(tmp):
        calls.append(tmp)
        time.sleep(0.2)
        tmp.write_text("built")

    threads = [threading.Thread(target=build_once, args=(tmp_path / "a" / "out.txt", slow_file)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "a" / "out.txt").read_text() == "built"

    def a_dir(tmp):
        tmp.mkdir()
        (tmp / "MANIFEST").write_text("{}")

    out = build_once(tmp_path / "d", a_dir, is_built=lambda p: (p / "MANIFEST").exists())
    assert (out / "MANIFEST").exists()

    def broken(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(tmp_path / "e", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]  # no output, no temporary, no lock


def test_one_atomic_write_one_whole_line_appender_one_tolerant_reader(tmp_path, monkeypatch):
    from splitsweep import fsio

    target = tmp_path / "d" / "f.json"
    fsio.write_atomic(target, b"old", mode=0o640)
    assert target.read_bytes() == b"old" and (target.stat().st_mode & 0o777) == 0o640
    monkeypatch.setattr(fsio.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        fsio.write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["f.json"]

    table = tmp_path / "t.jsonl"
    assert fsio.read_jsonl(table) == []
    assert fsio.append_jsonl(table, [{"a": 1}, {"a": 2}]) == 0
    with open(table, "a") as f:
        f.write('[1, 2]\n"text"\n{"a": 3, "b')  # foreign lines, then a writer killed mid-line
    start = fsio.append_jsonl(table, [{"a": 4}])
    assert table.read_bytes()[start:] == b'{"a": 4}\n'  # not glued to the torn line: that one ends first
    assert table.read_text().splitlines()[-2] == '{"a": 3, "b'
    assert fsio.read_jsonl(table) == [{"a": 1}, {"a": 2}, {"a": 4}]
    before = table.read_bytes()

    real_write = os.write

    def full(fd, view):
        real_write(fd, bytes(view[:3]))  # a few bytes land, then the disk is full
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fsio.os, "write", full)
    with pytest.raises(fsio.AppendError, match="No space left"):
        fsio.append_jsonl(table, [{"a": 5}])
    monkeypatch.undo()
    assert table.read_bytes() == before  # cut back: whole lines or nothing
