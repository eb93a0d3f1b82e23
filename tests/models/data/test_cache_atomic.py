"""The cache (settings hash) and the atomic output folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from models.data import pipeline, prepare, shards


def _criteo(tmp_path, rows=50):
    path = tmp_path / "train.txt"
    lines = ["\t".join([str(i % 2), *[str(i)] * 13, *[f"{i % 7:08x}"] * 26]) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_second_run_is_cached_and_untouched(cli, tmp_path):
    path = _criteo(tmp_path)
    out = tmp_path / "out"
    r1 = cli("data", "prepare", "--format", "criteo", "--input", path, "--out", out)
    assert r1.status == 0 and "prepared in" in r1.out
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r2 = cli(
        "data", "prepare", "--format", "criteo", "--input", path, "--out", out, "--chunk-rows", "7"
    )
    assert r2.status == 0 and "(cached, settings hash" in r2.out  # chunk size is not a setting
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_changed_setting_or_input_replaces(tmp_path):
    path = _criteo(tmp_path)
    out = prepare("criteo", path, tmp_path / "out", min_count=1)
    h1 = json.loads((out / "manifest.json").read_text())["settings_hash"]
    prepare("criteo", path, out, min_count=2)
    m2 = json.loads((out / "manifest.json").read_text())
    assert m2["settings_hash"] != h1 and m2["settings"]["min_count"] == 2
    path.write_text(path.read_text() + path.read_text())  # new content, same name
    prepare("criteo", path, out, min_count=2)
    m3 = json.loads((out / "manifest.json").read_text())
    assert m3["settings_hash"] != m2["settings_hash"] and m3["rows"]["kept"] == 100
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_shard_is_not_a_cache_hit(tmp_path):
    path = _criteo(tmp_path)
    out = prepare("criteo", path, tmp_path / "out")
    (out / "val-00000.sparse.npy").unlink()
    assert not pipeline.prepare_with_status("criteo", path, out).cached
    assert (out / "val-00000.sparse.npy").is_file()


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    path = _criteo(tmp_path, rows=500)
    calls = []

    def boom(self, *a):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.ShardWriter, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare("criteo", path, tmp_path / "out", chunk_rows=50)
    assert calls and sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]


def test_failure_keeps_the_previous_complete_folder(tmp_path, monkeypatch):
    path = _criteo(tmp_path)
    out = prepare("criteo", path, tmp_path / "out", min_count=1)
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(pipeline, "_manifest", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        prepare("criteo", path, out, min_count=3)
    assert (out / "manifest.json").read_text() == before


SLOW_WRITER = """
import sys, time
from models.data import prepare, shards

write = shards.ShardWriter.write

def slow_write(self, *arrays):  # 0.1 s per chunk and split: the write pass takes >= 1.2 s
    time.sleep(0.1)
    write(self, *arrays)

shards.ShardWriter.write = slow_write
prepare("synthetic", None, sys.argv[1], rows=4 * 65536, shard_rows=65536)
"""


def test_sigkill_mid_prepare_leaves_no_complete_folder(tmp_path):
    out = tmp_path / "syn"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out)], cwd=os.getcwd())
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".syn.tmp-*/train-*.dense.npy")):
        time.sleep(0.02)  # until the write pass has created the shards
    time.sleep(0.5)  # inside the write pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    (tmp,) = [p for p in tmp_path.iterdir()]
    assert tmp.name.startswith(".syn.tmp-") and any(tmp.iterdir())  # killed mid-write
    assert not (tmp / "manifest.json").exists()


def test_stale_tmp_of_a_dead_process_is_removed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".out.tmp-{dead_pid}-abcd1234"
    stale.mkdir()
    (stale / "train-00000.dense.npy").write_bytes(b"partial")
    live = tmp_path / f".out.tmp-{os.getpid()}-abcd1234"  # a running prepare: left alone
    live.mkdir()
    prepare("criteo", _criteo(tmp_path), tmp_path / "out")
    assert not stale.exists() and live.exists()
