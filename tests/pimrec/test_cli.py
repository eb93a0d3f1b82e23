"""The `pimrec` command: every subcommand explains itself with an example; presets list/show."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import yaml

from pimrec.cli import build_parser


def _all_commands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _all_commands(sub, (*prefix, name))


def test_every_subcommand_help_has_an_example(cli):
    commands = list(_all_commands(build_parser()))
    assert len(commands) >= 3
    for words, _ in commands:
        result = cli(*words, "--help")
        assert result.status == 0, words
        assert "example" in result.out, words


def test_presets_list(cli):
    result = cli("presets", "list")
    assert result.status == 0
    names = [line.split()[0] for line in result.out.splitlines()]
    assert {"ddr4-2400r", "hbm-pim", "dimm-nmp", "reram-isaac", "host-cpu"} <= set(names)


def test_presets_show_yaml_and_json(cli, tmp_path):
    result = cli("presets", "show", "hbm-pim", "--set", "dram.channels=8")
    assert result.status == 0
    doc = yaml.safe_load(result.out)
    assert doc["preset"]["dram"]["channels"] == 8
    assert doc["derived"]["bank_pim"]["units"] == 64
    out = tmp_path / "p.json"
    assert cli("presets", "show", "ddr4-2400r", "--json", "-o", out).status == 0
    doc = json.loads(out.read_text())
    assert doc["preset"]["dram"]["timing"]["trcd_cycles"] == 16
    # units in every leaf key of the timing and derived sections
    assert all(k.endswith(("_cycles", "_ps", "_ns")) for k in doc["preset"]["dram"]["timing"])


def test_demo_end_to_end_small(cli, tmp_path):
    # the main job on a tiny slice: data -> train -> trace -> simulate -> report
    result = cli("demo", "--out", tmp_path, "--rows", "3000", "--steps", "5", "--trace-batch", "32",
                 "--models", "dlrm", "--hw", "dimm-nmp", "--mode", "fast", "--no-progress")
    assert result.status == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema"] == "pimrec.report/1" and report["kind"] == "demo"
    dlrm = report["results"]["dlrm"]
    assert 0.0 <= dlrm["auc"] <= 1.0 and dlrm["logloss"] > 0
    assert dlrm["excess_logloss"] == dlrm["logloss"] - report["results"]["bayes_optimal_test_logloss"]
    sim = dlrm["hardware"]["dimm-nmp"]
    assert sim["speedup"] > 0 and (tmp_path / "traces" / "dlrm.json").is_file()
    assert "dlrm" in result.out and "dimm-nmp" in result.out


def test_demo_rejects_bad_preset_before_work(cli, tmp_path):
    result = cli("demo", "--out", tmp_path, "--hw", "nope")
    assert result.status == 2 and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "data").exists()


def test_console_script_runs():
    # the installed entry point, in a fresh interpreter (no torch import needed for presets)
    code = (
        "import sys; from pimrec.cli import main; sys.exit(main(['presets', 'show', 'ddr4-2400r']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in proc.stderr
