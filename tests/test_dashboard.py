"""optuna-dashboard on a real study: per-trial artifacts and the study note written during ``run``, and
``python -m study dashboard`` serving the storage's API on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import TrialState
from test_report import ROOT, small_study

from study.artifacts import ARTIFACT_FILES, artifact_dir_for, artifact_store_for, study_note


def test_artifact_folder_next_to_file_storages(tmp_path: Path) -> None:
    assert artifact_dir_for(f"sqlite:///{tmp_path}/runs/s.db") == tmp_path / "runs" / "s-artifacts"
    assert artifact_dir_for("sqlite:///study.db") == Path("study-artifacts")
    assert artifact_dir_for(f"journal:{tmp_path}/j.log") == tmp_path / "j-artifacts"
    for url in ("sqlite:///:memory:", "postgresql://u:p@host/db", "mysql+pymysql://u@h/db"):
        assert artifact_dir_for(url) is None
    assert artifact_store_for(f"sqlite:///{tmp_path}/x.db", create=False) is None
    assert artifact_store_for(f"sqlite:///{tmp_path}/x.db") is not None
    assert (tmp_path / "x-artifacts").is_dir()


def test_run_uploads_trial_artifacts_and_writes_the_study_note(tmp_path: Path) -> None:
    from optuna_dashboard import get_note

    s = small_study()
    study = s.load()
    store = artifact_store_for(s.storage, create=False)
    assert store is not None and (s.folder / "study-artifacts").is_dir()
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 7
    for trial in finished:
        metas = get_all_artifact_meta(trial, storage=study._storage)
        assert sorted(m.filename for m in metas) == sorted(ARTIFACT_FILES), trial.number
        by_name = {m.filename: m for m in metas}
        target = tmp_path / f"{trial.number}.json"
        download_artifact(
            artifact_store=store, artifact_id=by_name["learning_curve.json"].artifact_id, file_path=str(target)
        )
        doc = json.loads(target.read_text())
        assert doc["trial"] == trial.number
        assert doc["learning_curve"] == trial.user_attrs["learning_curve"]
        assert doc["pruned_at_epoch"] == trial.user_attrs.get("pruned_at_epoch")
        target_csv = tmp_path / f"{trial.number}.csv"
        download_artifact(
            artifact_store=store, artifact_id=by_name["learning_curve.csv"].artifact_id, file_path=str(target_csv)
        )
        lines = target_csv.read_text().splitlines()
        assert lines[0] == "epoch,valid_top100,loss" and len(lines) == 1 + trial.user_attrs["epochs_run"]
        target_cfg = tmp_path / f"{trial.number}-config.json"
        download_artifact(
            artifact_store=store, artifact_id=by_name["config.json"].artifact_id, file_path=str(target_cfg)
        )
        assert json.loads(target_cfg.read_text()) == trial.user_attrs["config"]
    note = get_note(study)
    best = max((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best trial: #{best.number}" in note and "python -m study train" in note
    assert study_note(study).startswith("## small")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read().decode("utf-8"))


@pytest.mark.slow
def test_dashboard_command_serves_the_study_api() -> None:
    s = small_study()
    study = s.load()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "study", "dashboard", "--storage", s.storage, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        summaries = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                summaries = _get_json(f"{base}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert summaries is not None, "dashboard did not answer in 120 s"
        by_name = {entry["study_name"]: entry for entry in summaries["study_summaries"]}
        assert "small" in by_name
        detail = _get_json(f"{base}/api/studies/{by_name['small']['study_id']}")
        assert detail["name"] == "small"
        assert len(detail["trials"]) == len(study.trials)
        assert sorted(t["number"] for t in detail["trials"]) == [t.number for t in study.trials]
        assert "Best trial" in detail["note"]["body"]
        first = next(t for t in detail["trials"] if t["state"] == "Complete")
        assert {a["filename"] for a in first["artifacts"]} == set(ARTIFACT_FILES)
        artifact = next(a for a in first["artifacts"] if a["filename"] == "learning_curve.json")
        served = _get_json(
            f"{base}/artifacts/{by_name['small']['study_id']}/{first['trial_id']}/{artifact['artifact_id']}"
        )
        assert served["trial"] == first["number"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert f"open http://127.0.0.1:{port}/dashboard/" in output  # loopback by default, URL printed


def test_dashboard_refuses_a_missing_storage_file(tmp_path: Path) -> None:
    from study.dashboard import serve
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        serve(f"sqlite:///{tmp_path}/nope.db", port=_free_port())
