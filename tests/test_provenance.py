"""The provenance record a study keeps: command, times, host and commit, read from the real machine."""

from __future__ import annotations

import os
import re
import subprocess

import torch

from distdiff import provenance as prov


def test_the_record_names_the_command_the_host_and_the_checkouts_commit():
    started = prov.utc_now()
    record = prov.provenance(["distdiff", "trilemma", "--quick"], started)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["finished_utc"])
    assert record["started_utc"] <= record["finished_utc"]
    host = record["host"]
    assert host["cpu_count"] == os.cpu_count() and host["torch"] == torch.__version__ and host["cpu"]
    head = subprocess.run(["git", "-C", str(prov.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI runs in a fresh clone); an installed wheel has no commit
        assert record["code"]["commit"] == head.stdout.strip()
        assert isinstance(record["code"]["modified"], bool)
    sentence = prov.describe(record)
    assert started in sentence and "`distdiff trilemma --quick`" in sentence and host["torch"] in sentence


def test_outside_a_git_checkout_the_commit_is_unknown_not_invented(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "REPO_ROOT", tmp_path)
    assert prov.code_version() == {"commit": None, "modified": None}
    record = prov.provenance(["distdiff", "trilemma"], prov.utc_now())
    assert "code outside a git checkout" in prov.describe(record)
