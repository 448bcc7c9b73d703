"""Smoke tests of the benchmarks: tiny runs end to end, checking their machine-readable last lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FINAL_LINE = re.compile(
    r"^train_speed: epoch_ratio=(?P<epoch>\S+) validation_ratio=(?P<validation>\S+) "
    r"top100_ours=(?P<ours>\S+) top100_reference=(?P<reference>\S+) epochs=(?P<epochs>\d+)$"
)


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/SCRIPT ARGS`` from the repository root; 300 s is a hang guard (each run here takes ~40 s)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_train_speed_runs_and_reports() -> None:
    proc = run_benchmark("train_speed.py", "--epochs", "2", "--max-rows", "20000")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = FINAL_LINE.match(lines[-1])
    assert match, f"unexpected last line: {lines[-1]!r}"
    assert int(match["epochs"]) == 2
    for name in ("epoch", "validation"):
        ratio = float(match[name])
        assert ratio > 0 and ratio != float("inf"), (name, ratio)
    for name in ("ours", "reference"):
        assert 0.0 <= float(match[name]) <= 1.0, (name, match[name])
    # one row per epoch with both sides' numbers
    assert sum(1 for line in lines if re.match(r"^\s+[12] \|", line)) == 2


@pytest.mark.slow
def test_parallel_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """benchmarks/parallel.py end to end on 2 one-epoch trials per run on a small CSV, two pairs (alternating which
    run goes first): every run finishes, each pair reports its ratio, and the last line is their median."""
    from e2e_util import write_dataset

    data = write_dataset(tmp_path / "interactions.csv", n_rows=3000)
    proc = run_benchmark("parallel.py", "--trials", "2", "--epochs", "1", "--repeat", "2", "--dataset", f"csv:{data}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = re.match(r"^parallel: jobs=2 speedup=(\d+\.\d\d)$", lines[-1])
    assert match, f"unexpected last line: {lines[-1]!r}"
    runs = [line.split(":")[0] for line in lines if re.match(r"^jobs=[12]: 2 trials \(0 failed\)", line)]
    assert runs == ["jobs=1", "jobs=2", "jobs=2", "jobs=1"], proc.stdout
    pairs = [
        float(m[1])
        for line in lines
        if (m := re.match(r"^pair [12] \(--jobs [12] first\): speedup=(\d+\.\d\d)$", line))
    ]
    assert len(pairs) == 2 and all(p > 0 for p in pairs), proc.stdout
    # the median of two is their mean (each rounded to 2 decimals here, hence the tolerance)
    assert abs(float(match[1]) - sum(pairs) / 2) <= 0.011, (match[1], pairs)
    # each run's CPU-seconds come from the OS (its workers included): some CPU, and no more cores busy than exist
    busy = [float(m[1]) for line in lines if (m := re.search(r"CPU-seconds \(.*\), (\d+\.\d\d) cores busy", line))]
    assert len(busy) == 4 and all(0 < b <= (os.cpu_count() or 1) + 0.05 for b in busy), proc.stdout
    assert any(line.startswith("diagnostic, where S comes from") for line in lines), proc.stdout


@pytest.mark.slow
def test_phases_benchmark_runs_and_reports() -> None:
    """benchmarks/phases.py on one 2-epoch trial: both sides run, and the last line holds a positive ratio per phase."""
    proc = run_benchmark("phases.py", "--trials", "1", "--epochs", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = re.match(
        r"^phases: trial=(\d+\.\d\d) first_epoch=(\d+\.\d\d) epochs=(\d+\.\d\d) validation=(\d+\.\d\d)$", lines[-1]
    )
    assert match, f"unexpected last line: {lines[-1]!r}"
    assert all(float(v) > 0 for v in match.groups()), lines[-1]
    sides = [line.split(":")[0] for line in lines if re.search(r": per trial \d+\.\d\d s \(", line)]
    assert sides == ["default threads", "one thread, one core"], proc.stdout


@pytest.mark.slow
def test_recycle_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """benchmarks/recycle.py on 3 one-epoch trials on a small CSV, one worker: the recycled run takes 3 processes,
    the other one, and the last line holds positive ratios."""
    from e2e_util import write_dataset

    data = write_dataset(tmp_path / "interactions.csv", n_rows=3000)
    proc = run_benchmark(
        "recycle.py", "--trials", "3", "--epochs", "1", "--after", "1", "--jobs", "1", "--dataset", f"csv:{data}"
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = re.match(r"^recycle: after=1 peak_rss=(\d+\.\d\d) wall=(\d+\.\d\d)$", lines[-1])
    assert match, f"unexpected last line: {lines[-1]!r}"
    assert all(float(v) > 0 for v in match.groups()), lines[-1]
    runs = [
        m.groups() for line in lines if (m := re.match(r"^--recycle-after (\d+): 3 trials in .* by (\d+) worker", line))
    ]
    assert runs == [("0", "1"), ("1", "3")], proc.stdout


@pytest.mark.slow
def test_search_quality_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """benchmarks/search_quality.py on 2 one-epoch trials per study, one seed, a small synthetic CSV: both spaces run
    with the same seed (base first), each stores a test top-100, and the last line holds both means and their ratio."""
    from e2e_util import write_dataset

    data = write_dataset(tmp_path / "interactions.csv", n_rows=3000)
    proc = run_benchmark(
        "search_quality.py", "--trials", "2", "--seeds", "1", "--dataset", f"csv:{data}", "--", "--max-epochs", "1"
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = re.match(
        r"^search_quality: base=(\d\.\d{4})±(nan|\d\.\d{4}) extended=(\d\.\d{4})±(nan|\d\.\d{4}) ratio=(\d+\.\d{3})$",
        lines[-1],
    )
    assert match, f"unexpected last line: {lines[-1]!r}"
    base, base_sd, extended, extended_sd, ratio = match.groups()
    assert base_sd == extended_sd == "nan", lines[-1]  # one seed: no sd
    assert 0 < float(base) <= 1 and 0 < float(extended) <= 1, lines[-1]
    assert abs(float(ratio) - float(extended) / float(base)) <= 0.001 + 0.0001 / float(base), lines[-1]
    runs = [
        m.groups()
        for line in lines
        if (
            m := re.match(
                r"^(base|extended) \((\w+)\) seed=(\d+): (\d) complete / (\d) pruned / 0 failed, .* test top100=(\d\.\d{4}),",
                line,
            )
        )
    ]
    assert [r[:3] for r in runs] == [("base", "default", "0"), ("extended", "losses", "0")], proc.stdout
    # a one-epoch trial can still be pruned at its only epoch (Hyperband), but the first trial of a study never is
    assert all(int(r[3]) >= 1 and int(r[3]) + int(r[4]) == 2 for r in runs), proc.stdout
    assert [r[5] for r in runs] == [base, extended], proc.stdout
    assert re.search(
        r"^paired by seed, extended - base, test top100: [+-]\d\.\d{4}±nan over 1 seeds", proc.stdout, re.M
    )


@pytest.mark.slow
def test_scale_benchmark_runs_and_reports() -> None:
    """benchmarks/scale.py at one tiny size, one timed epoch: the size runs in its own process, the table has its
    row, and the closing line holds one positive value per size for every field."""
    proc = run_benchmark("scale.py", "--sizes", "20000:500", "--epochs", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    match = re.match(
        r"^scale: encode_per_1m_rows=(?P<encode>\S+) epoch_per_1m_rows=(?P<epoch>\S+) "
        r"per_row_epoch_ratio_max=(?P<epoch_ratio>\S+) per_row_encode_ratio_max=(?P<encode_ratio>\S+) "
        r"sample_share_max=(?P<share>\S+) exact_valid_s=(?P<valid>\S+) peak_rss_mb=(?P<rss>\S+)$",
        lines[-1],
    )
    assert match, f"unexpected last line: {lines[-1]!r}"
    for name in ("encode", "epoch", "valid", "rss"):
        values = [float(v) for v in match[name].split(",")]
        assert len(values) == 1 and all(0 < v < float("inf") for v in values), (name, match[name])
    # one size: its per-row cost is the smallest and the largest
    assert float(match["epoch_ratio"]) == float(match["encode_ratio"]) == 1.0, lines[-1]
    assert 0 < float(match["share"]) < float("inf"), lines[-1]
    assert sum(1 for line in lines if re.match(r"^\s+20000\s+500 \|", line)) == 1, proc.stdout
