"""Resumption of `train model` (stop_after hook) and of both trainers after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from models.nas.space import sample_subnet, save_subnet
from models.nas.standalone import ModelConfig, train_model
from models.nas.train import SupernetConfig, train_supernet
from pimrec.errors import PimrecError
from tests.conftest import ROOT


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _assert_same_checkpoint(a, b):
    assert a["finished"] == b["finished"]
    ca, cb = a["current"], b["current"]
    assert (ca is None) == (cb is None)
    if ca is None:
        return
    for key in ("seed", "step", "data_position", "best", "best_step", "bad"):
        assert ca[key] == cb[key], key
    _assert_same_state(ca["model"], cb["model"])
    if ca["best_state"] is not None or cb["best_state"] is not None:
        _assert_same_state(ca["best_state"], cb["best_state"])
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["sum"], sb[k]["sum"]) and torch.equal(sa[k]["step"], sb[k]["step"])
    assert ca["rng"]["numpy"] == cb["rng"]["numpy"]
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])


@pytest.fixture
def model_config(tiny, tiny_data, tmp_path):
    s = tmp_path / "s.json"
    save_subnet(sample_subnet("tiny", 5), s)
    return ModelConfig(str(tiny_data), subnet=str(s), seeds=(3, 4), max_steps=6, batch_size=128,
                       eval_every=2, patience=5, device="cpu")  # fmt: skip


def test_train_model_resume_is_bitwise_exact(model_config, tmp_path, monkeypatch):
    cfg = model_config
    train_model(cfg, tmp_path / "a", progress=False)
    # stopped inside seed 3 between validations; then again inside seed 4
    r = train_model(cfg, tmp_path / "b", progress=False, stop_after=(3, 3))
    assert r == {"stopped_at": {"seed": 3, "step": 3}, "per_seed": []}
    assert not (tmp_path / "b" / "report.json").exists()
    assert _load(tmp_path / "b" / "checkpoint.pt")["current"]["step"] == 3
    r = train_model(cfg, tmp_path / "b", progress=False, stop_after=(4, 5))
    assert [s["seed"] for s in r["per_seed"]] == [3]
    train_model(cfg, tmp_path / "c", progress=False, stop_after=(4, 5))  # uninterrupted
    _assert_same_checkpoint(
        _load(tmp_path / "b" / "checkpoint.pt"), _load(tmp_path / "c" / "checkpoint.pt")
    )
    train_model(cfg, tmp_path / "b", progress=False)
    a, b = (
        (tmp_path / "a" / "report.json").read_bytes(),
        (tmp_path / "b" / "report.json").read_bytes(),
    )
    assert a == b  # same results, byte for byte
    log = (tmp_path / "b" / "train.log").read_text().splitlines()
    assert log[0].startswith("config {")
    assert "resumed at seed 3 step 3" in log and "resumed at seed 4 step 5" in log
    final = _load(tmp_path / "b" / "checkpoint.pt")
    assert final["current"] is None and [s["seed"] for s in final["finished"]] == [3, 4]

    # a finished folder: the same report again, without training
    import models.nas.train as train

    monkeypatch.setattr(train, "train_step", lambda *a, **k: pytest.fail("trained again"))
    train_model(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "report.json").read_bytes() == a


def test_train_model_resume_mismatch_names_the_field(model_config, tmp_path, cli):
    from dataclasses import replace

    train_model(model_config, tmp_path / "b", progress=False, stop_after=(3, 1))
    with pytest.raises(PimrecError) as err:
        train_model(replace(model_config, lr=0.05), tmp_path / "b", progress=False)
    assert err.value.field == "lr" and "checkpoint.pt" in str(err.value)
    with pytest.raises(PimrecError) as err:
        train_model(replace(model_config, seeds=(3, 5)), tmp_path / "b", progress=False)
    assert err.value.field == "seeds"
    r = cli("train", "model", "--subnet", model_config.subnet, "--data", model_config.data,
            "--out", tmp_path / "b", "--seeds", "3", "4", "--max-steps", "6", "--batch-size",
            "128", "--eval-every", "2", "--patience", "4", "--no-progress")  # fmt: skip
    assert r.status == 2 and r.err.count("\n") == 1 and "patience" in r.err, r.err
    # settings that do not change the result may differ (device, checkpoint frequency)
    r = train_model(replace(model_config, checkpoint_every=1), tmp_path / "b", progress=False,
                    stop_after=(3, 2))  # fmt: skip
    assert r["stopped_at"] == {"seed": 3, "step": 2}


def _kill_at(tmp_path, where, n, *args):
    """Run `pimrec ARGS` in a subprocess, SIGKILL it once it blocks at (where, n)."""
    flag = tmp_path / f"blocked-{where}-{n}"
    # the checkout first, then any path already given (packages installed under it)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tests/models/nas/killable.py"), str(flag), where, str(n),
           *map(str, args), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # a safety net for a hung child, not a measurement
        while not flag.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the run ended before it blocked ({proc.returncode}): {err.decode()}")
            if time.monotonic() > deadline:
                pytest.fail("the run never reached the kill point")
            time.sleep(0.05)
        assert int(flag.read_text()) == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_supernet_resumes_after_sigkill(tiny, tiny_data, tmp_path, cli):
    # both runs on the CPU (the killed one is told so): bitwise equality across devices is not asked
    cfg = SupernetConfig(str(tiny_data), space="tiny", steps=8, batch_size=64, checkpoint_every=2,
                         full_warmup_steps=4, device="cpu")  # fmt: skip
    train_supernet(cfg, tmp_path / "a", progress=False)
    args = ("train", "supernet", "--data", tiny_data, "--space", "tiny", "--steps", "8",
            "--batch-size", "64", "--checkpoint-every", "2", "--full-warmup-steps", "4",
            "--device", "cpu", "--out", tmp_path / "b")  # fmt: skip
    _kill_at(tmp_path, "step", 6, *args)  # killed inside step 6: the last checkpoint is step 4
    assert _load(tmp_path / "b" / "checkpoint.pt")["step"] == 4
    r = cli(*args, "--no-progress")
    assert r.status == 0, r.err
    a, b = _load(tmp_path / "a" / "checkpoint.pt"), _load(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 8 and a["data_position"] == b["data_position"]
    _assert_same_state(a["model"], b["model"])
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["sum"], b["optimizer"]["state"][k]["sum"])
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    assert "resumed at step 4" in (tmp_path / "b" / "train.log").read_text()


def test_train_model_resumes_after_sigkill_during_checkpoint_write(model_config, tmp_path, cli):
    cfg = model_config
    train_model(cfg, tmp_path / "a", progress=False)
    args = ("train", "model", "--subnet", cfg.subnet, "--data", cfg.data, "--out", tmp_path / "b",
            "--seeds", "3", "4", "--max-steps", "6", "--batch-size", "128", "--eval-every", "2",
            "--patience", "5", "--device", "cpu")  # fmt: skip
    # checkpoint writes of seed 3: steps 2, 4, 6, seed end; the 5th is seed 4's step 2
    _kill_at(tmp_path, "save", 5, *args)
    out = tmp_path / "b"
    assert list(out.glob(".checkpoint.pt.*.tmp")), "the kill left the temporary file"
    ckpt = _load(out / "checkpoint.pt")
    assert ckpt["current"] is None and [s["seed"] for s in ckpt["finished"]] == [3]
    r = cli(*args, "--no-progress")
    assert r.status == 0, r.err
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    assert (out / "report.json").read_bytes() == (tmp_path / "a" / "report.json").read_bytes()
    assert "resumed at seed 4 step 0" in (out / "train.log").read_text()


def test_diverged_training_is_a_clear_error(model_config, tmp_path, monkeypatch):
    """Every validation log loss NaN (a diverged run): a PimrecError naming the learning rate,
    not a crash on missing best weights, and no report."""
    import models.nas.standalone as standalone
    from pimrec.errors import PimrecError

    nan = float("nan")
    monkeypatch.setattr(standalone, "ctr_metrics", lambda *a: {"auc": nan, "logloss": nan})
    with pytest.raises(PimrecError, match="never finite") as err:
        train_model(model_config, tmp_path / "d", progress=False)
    assert err.value.field == "lr"
    assert not (tmp_path / "d" / "report.json").exists()
