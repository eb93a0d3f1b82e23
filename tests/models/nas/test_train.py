"""Supernet training with exact resume, head-only evaluation, standalone training, the teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.nas.space import sample_subnet, save_subnet
from models.nas.train import SupernetConfig, train_supernet


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_is_bitwise_exact(tiny, tiny_data, tmp_path):
    """On the CPU (the module docstring: on CUDA atomic adds make it exact to rounding only)."""
    cfg = SupernetConfig(str(tiny_data), space="tiny", steps=10, batch_size=64,
                         checkpoint_every=3, full_warmup_steps=5, log_every=1,
                         device="cpu")  # fmt: skip
    train_supernet(cfg, tmp_path / "a", progress=False)
    train_supernet(cfg, tmp_path / "b", progress=False, stop_after=4)  # "killed" after step 4
    assert _load(tmp_path / "b" / "checkpoint.pt")["step"] == 4
    assert not (tmp_path / "b" / "report.json").exists()
    train_supernet(cfg, tmp_path / "b", progress=False)
    a, b = _load(tmp_path / "a" / "checkpoint.pt"), _load(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 10 and a["data_position"] == b["data_position"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["sum"], b["optimizer"]["state"][k]["sum"])
    log = (tmp_path / "b" / "train.log").read_text().splitlines()
    assert log[0].startswith("config {") and "resumed at step 4" in log
    assert json.loads(log[0][7:])["full_warmup_steps"] == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA resume needs CUDA")
def test_resume_on_cuda_matches_to_rounding(tiny, tiny_data, tmp_path):
    """On CUDA a resumed run takes the same steps over the same batches with the same generator
    states as an uninterrupted one; its weights differ only by the order of the atomic adds in
    the embedding's backward (module docstring). In fp32: under bf16 autocast a difference in
    the last bit can flip an activation's rounding (2**-8 relative), which no tight tolerance
    would hold, while what a resume restores is the same either way."""
    cfg = SupernetConfig(str(tiny_data), space="tiny", steps=10, batch_size=64,
                         checkpoint_every=3, full_warmup_steps=5, device="cuda",
                         amp=False)  # fmt: skip
    train_supernet(cfg, tmp_path / "a", progress=False)
    train_supernet(cfg, tmp_path / "b", progress=False, stop_after=4)
    train_supernet(cfg, tmp_path / "b", progress=False)
    a, b = _load(tmp_path / "a" / "checkpoint.pt"), _load(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 10 and a["data_position"] == b["data_position"]
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    for k in a["model"]:  # rounding; a lost state or batch moves weights by ~lr (0.12) steps
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-3, atol=1e-4, msg=k)
    for k, s in a["optimizer"]["state"].items():
        sb = b["optimizer"]["state"][k]
        torch.testing.assert_close(sb["sum"], s["sum"], rtol=1e-3, atol=1e-7)
        assert torch.equal(sb["step"], s["step"])


def test_cli_train_and_eval(tiny, tiny_data, tiny_supernet, tmp_path, cli):
    run, ckpt = tiny_supernet
    report = json.loads((run / "report.json").read_text())
    assert report["results"]["steps"] == 6 and report["config"]["space"] == "tiny"
    s = tmp_path / "s.json"
    save_subnet(sample_subnet("tiny", 1), s)
    r = cli("eval", "subnet", "--supernet", ckpt, "--subnet", s, "--finetune-steps", "5",
            "--batch-size", "64", "--out", tmp_path / "e", "--no-progress")  # fmt: skip
    assert r.status == 0, r.err
    results = json.loads((tmp_path / "e" / "report.json").read_text())["results"]
    assert 0 <= results["auc"] <= 1 and results["logloss"] > 0


def test_cli_train_model_subnet_and_baseline(tiny, tiny_data, tmp_path, cli):
    s = tmp_path / "s.json"
    save_subnet(sample_subnet("tiny", 2), s)
    r = cli("train", "model", "--subnet", s, "--data", tiny_data, "--out", tmp_path / "m",
            "--seeds", "0", "1", "--batch-size", "128", "--max-steps", "6", "--eval-every", "3",
            "--no-progress")  # fmt: skip
    assert r.status == 0, r.err
    assert "+-" in r.out
    res = json.loads((tmp_path / "m" / "report.json").read_text())["results"]
    assert {"auc", "logloss", "auc_std", "logloss_std"} <= set(res) and len(res["per_seed"]) == 2
    r = cli("train", "model", "--model", "dlrm", "--data", tiny_data, "--out", tmp_path / "d",
            "--batch-size", "128", "--max-steps", "4", "--no-progress")  # fmt: skip
    assert r.status == 0, r.err
    assert "auc" in json.loads((tmp_path / "d" / "report.json").read_text())["results"]


def test_subnet_teacher_is_deterministic_and_feeds_prepare(tiny, tmp_path):
    from models.data import open_split, prepare
    from models.nas.teacher import SubnetTeacher

    tables, n_dense = [50, 9, 30], 4
    t1, t2 = SubnetTeacher(tables, n_dense, seed=3), SubnetTeacher(tables, n_dense, seed=3)
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(20, n_dense)).astype(np.float32)
    sparse = rng.integers(0, 60, (20, 3)).astype(np.int32)
    np.testing.assert_array_equal(t1.logits(dense, sparse), t2.logits(dense, sparse))
    assert t1.logits(dense, sparse).shape == (20,) and t1.describe()["seed"] == 3
    assert t1.describe() != SubnetTeacher(tables, n_dense, seed=4).describe()
    # No student shares the teacher's weights: a student trained with the teacher's seed (or any
    # small seed) starts elsewhere, its embedding tables included.
    from models.nas.supernet import SubnetModel
    from models.nas.teacher import weight_seed

    assert t1.describe()["weight_seed"] == weight_seed(3) >= 2**40
    teacher_w = t1.model.state_dict()
    for s in range(8):
        student = SubnetModel(t1.subnet, tables, n_dense, seed=s).state_dict()
        assert student.keys() == teacher_w.keys()
        for name, w in teacher_w.items():
            if w.is_floating_point() and w.numel() > 1 and w.std() > 0:
                assert not torch.equal(student[name], w), (s, name)
    teacher = SubnetTeacher(
        [42] * 26, 13, seed=1, space="tiny"
    )  # the criteo shape capped at 40 (+2) rows
    out = prepare("synthetic", None, tmp_path / "d", rows=500, max_table_rows=40,
                  teacher=teacher, progress=False)  # fmt: skip
    assert len(open_split(out, "train")) > 0


def test_resume_after_interrupt_between_checkpoints(tiny, tiny_data, tmp_path, monkeypatch):
    """A run killed mid-interval restarts from the last checkpoint and ends bitwise equal."""
    import models.nas.train as train

    cfg = SupernetConfig(str(tiny_data), space="tiny", steps=8, batch_size=64,
                         checkpoint_every=3, full_warmup_steps=4, device="cpu")  # fmt: skip
    train_supernet(cfg, tmp_path / "a", progress=False)
    real, calls = train.train_step, [0]

    def dying_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # after the step-3 checkpoint, before the step-6 one
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(train, "train_step", real)
    assert _load(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    train_supernet(cfg, tmp_path / "b", progress=False)
    a, b = _load(tmp_path / "a" / "checkpoint.pt"), _load(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
