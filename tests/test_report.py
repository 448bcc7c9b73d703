"""The HTML report (and the seed re-runs it shows) on a small real study: structure, escaping, offline rendering.

``small_study()`` builds one real study per test session (tiny towers, 3 epochs, no XLA; one tutorial baseline,
pruned trials, one failed trial, seed re-runs) that test_dashboard.py and test_export.py reuse.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import html.parser
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import optuna
import pytest
from synthetic import make_table

from study.report import SECTIONS, build_figures, collect, render_html

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

# Tiny towers, no XLA; admits exactly one tutorial baseline ([32]); two embedding techniques and two bodies.
REPORT_SPACE = """\
model:
  depth: {type: int, low: 1, high: 2}
  units: {type: int, low: 16, high: 48, log: true}
  output_dim: {type: categorical, choices: [16, 32]}
  body: {type: categorical, choices: [mlp, deep_cross]}
  embedding: {type: categorical, choices: [full, hashing]}
  embedding_dim: {type: categorical, choices: [8, 32]}
train:
  learning_rate: {type: float, low: 0.05, high: 0.5, log: true}
  batch_size: {type: categorical, choices: [512, 2048]}
  epochs: 3
  eval_every: 1
  jit: false
"""


@dataclasses.dataclass(frozen=True)
class SmallStudy:
    folder: Path
    csv: Path
    storage: str
    name: str

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)


@functools.lru_cache(maxsize=1)
def small_study() -> SmallStudy:
    """A real study run in-process (shared by the report, dashboard and export tests; do not modify it)."""
    from study.config import RunSettings
    from study.evaluate import evaluate_study
    from study.runner import run_study

    folder = Path(tempfile.mkdtemp(prefix="study-report-test-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    table = make_table(n_rows=6000)
    table = table.assign(genres=table["genres"].map("|".join))
    csv = folder / "ratings.csv"
    table[["user_id", "item_id", "title", "timestamp", "genres", "rating"]].to_csv(csv, index=False)
    space = folder / "space.yaml"
    space.write_text(REPORT_SPACE)
    storage = f"sqlite:///{folder}/study.db"
    settings = RunSettings(
        space=str(space),
        dataset=f"csv:{csv}",
        storage=storage,
        study_name="small",
        trials=7,
        seed=0,
        baselines=True,
        quiet=True,
    )
    run_study(settings, out=io.StringIO())
    s = optuna.load_study(study_name="small", storage=storage)
    failed = s.ask()  # a failed trial, as a crashed objective leaves it
    failed.set_user_attr("fail_reason", "training diverged: loss=nan at epoch 1; try a lower learning rate")
    s.tell(failed, state=optuna.trial.TrialState.FAIL)
    evaluate_study(s, top=2, seeds=2, out=io.StringIO())
    return SmallStudy(folder, csv, storage, "small")


class _Page(html.parser.HTMLParser):
    """Collects what the tests look at: headings, element ids, figure divs, script srcs."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.ids: set[str] = set()
        self.figures: set[str] = set()
        self.script_srcs: list[str] = []
        self.scripts = 0
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.figures.add(a.get("id") or "")
        if tag == "script":
            self.scripts += 1
            if a.get("src"):
                self.script_srcs.append(a["src"])
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "study", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------------------------- collect


def test_collect_is_pure_plain_data_without_plotly() -> None:
    s = small_study()
    code = (
        "import dataclasses, json, sys, optuna, study\n"
        "from study.report import collect\n"
        f"d = collect(optuna.load_study(study_name={s.name!r}, storage={s.storage!r}))\n"
        "assert 'plotly' not in sys.modules, 'collect imported plotly'\n"
        "assert 'tensorflow' not in sys.modules, 'collect imported tensorflow'\n"
        "print(json.dumps(dataclasses.asdict(d)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)  # plain values all the way down
    assert data["study_name"] == "small"
    assert data["counts"]["FAIL"] == 1
    assert data["counts"]["COMPLETE"] + data["counts"]["PRUNED"] == 7
    assert data["best"]["number"] == optuna.load_study(study_name=s.name, storage=s.storage).best_trial.number
    assert data["best_test_metrics"]["top100"] > 0
    assert data["retrain_command"].startswith("python -m study train")
    assert len(data["baselines"]) == 1 and data["baselines"][0]["baseline"].startswith("tutorial")
    assert data["baselines"][0]["layers"] == [32]
    assert data["epochs_run"] <= data["epochs_budget"]
    assert data["epochs_budget"] - data["epochs_run"] >= data["epochs_saved_by_pruning"]
    assert {r["trial"] for r in data["seed_reruns"]} and all(len(r["values"]) == 2 for r in data["seed_reruns"])


def test_seed_reruns_stored_with_t_interval() -> None:
    from study.evaluate import mean_ci95

    s = small_study().load()
    reruns = s.user_attrs["seed_reruns"]
    assert len(reruns) == 2
    best = str(s.best_trial.number)
    assert best in reruns
    for entry in reruns.values():
        assert entry["metric"] == "top100" and len(entry["values"]) == len(entry["seeds"]) == 2
        mean, ci95, _ = mean_ci95(entry["values"])
        assert entry["mean"] == pytest.approx(mean, abs=1e-6) and entry["ci95"] == pytest.approx(ci95, abs=1e-6)
        assert 0.0 <= entry["mean"] <= 1.0


def test_t_quantiles() -> None:
    from study.evaluate import mean_ci95, t975

    mean, ci95, std = mean_ci95([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert ci95 == pytest.approx(4.3027 / 3**0.5, rel=1e-4)
    assert t975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t975(31) == pytest.approx(2.0395, abs=2e-4)  # expansion beyond the table
    assert t975(120) == pytest.approx(1.9799, abs=1e-4)
    with pytest.raises(ValueError):
        mean_ci95([1.0])


# --------------------------------------------------------------------------------------------- html


@pytest.mark.slow
def test_report_cli_writes_self_contained_html_with_every_section(tmp_path: Path) -> None:
    s = small_study()
    out = tmp_path / "sub" / "report.html"
    result = _cli("report", "--storage", s.storage, "--study", s.name, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out}" in result.stdout
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    assert page.headings == [title for _, title in SECTIONS]
    assert {key for key, _ in SECTIONS} <= page.ids
    expected = {
        "fig-history", "fig-curves", "fig-importances", "fig-parallel", "fig-slices", "fig-techniques",
        "fig-memory", "fig-durations", "fig-baselines", "fig-reruns",
    }  # fmt: skip
    assert expected <= page.figures
    assert page.script_srcs == []  # plotly.js inlined: opens offline
    assert "http://" not in "".join(page.script_srcs) and "<script src" not in text
    assert text.count("Plotly.newPlot(") == len(page.figures)
    assert "pruned here" in text  # pruned trials marked on the learning curves
    assert "tutorial" in text and "[32]" in text  # the baseline, side by side with the tuned best
    assert "± " in text  # seed re-runs: mean ± 95% CI
    assert "python -m study train" in text


def test_report_escapes_study_names_and_masks_passwords(tmp_path: Path) -> None:
    s = small_study()
    evil = "<script>alert(1)</script>"
    storage = f"sqlite:///{tmp_path}/evil.db"
    optuna.copy_study(from_study_name=s.name, from_storage=s.storage, to_storage=storage, to_study_name=evil)
    copied = optuna.load_study(study_name=evil, storage=storage)
    copied.set_user_attr("dataset", "csv:/data/<img src=x onerror=alert(2)>.csv")
    data = collect(copied, storage_url="postgresql://alice:s3cr3t@db.example:5432/studies")
    text = render_html(data, build_figures(copied, data))
    assert evil not in text and "alert(2)>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "s3cr3t" not in text
    assert "postgresql://alice:***@db.example:5432/studies" in text
    page = parse(text)
    assert page.script_srcs == []
    # one <script> for plotly.js, one per figure; nothing injected
    assert page.scripts == 1 + len(page.figures)


def _fake_trial_attrs(s: optuna.Study, trial: optuna.Trial, value: float, nbytes: int) -> None:
    trial.set_user_attr("learning_curve", [[1, value / 2], [2, value]])
    trial.set_user_attr("valid_metrics", {"top100": value})
    trial.set_user_attr("embedding_bytes", nbytes)
    trial.set_user_attr("epochs_run", 2)


def test_report_handles_empty_failed_and_multi_objective_studies() -> None:
    empty = optuna.create_study(study_name="empty")
    failed = optuna.create_study(study_name="all-failed")
    for _ in range(2):
        t = failed.ask()
        t.suggest_float("learning_rate", 0.01, 0.1)
        failed.tell(t, state=optuna.trial.TrialState.FAIL)
    multi = optuna.create_study(study_name="multi", directions=["maximize", "minimize"])
    multi.set_user_attr("objectives", ["top100", "embedding_bytes"])
    for i in range(5):
        t = multi.ask()
        lr = t.suggest_float("learning_rate", 0.01, 0.1)
        t.suggest_categorical("embedding", ["full", "hashing"])
        value, nbytes = 0.5 + lr + 0.01 * i, 1000 * (i + 1)
        _fake_trial_attrs(multi, t, value, nbytes)
        multi.tell(t, [value, nbytes])
    for s in (empty, failed, multi):
        data = collect(s)
        text = render_html(data, build_figures(s, data))
        page = parse(text)
        assert page.headings == [title for _, title in SECTIONS], s.study_name
        if s is not multi:  # only the timeline has something to show (failed trials took time too)
            assert "not available" in text and page.figures <= ({"fig-durations"} if s is failed else set())
    data = collect(multi)
    assert data.multi_objective and data.pareto and data.best is None
    text = render_html(data, build_figures(multi, data))
    assert "fig-memory" in parse(text).figures  # the Pareto front
    assert "Pareto front" in text


# --------------------------------------------------------------------------------------------- chromium


def _chromium_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (.ci/system-deps installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def chromium(args: list[str], user_data: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with everything that could reach the network switched off."""
    binary = _chromium_or_skip()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={user_data}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, raw filtered scanlines) of a non-interlaced PNG, with zlib only (no PIL needed)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        chunk = blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def assert_not_blank(path: Path) -> None:
    width, height, raw = png_pixels(path)
    assert width >= 800 and height >= 600
    # A blank page compresses to almost nothing and holds a handful of byte values.
    assert len(set(raw)) > 64, "screenshot looks blank"
    assert path.stat().st_size > 20_000


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line or ("CONSOLE" in line and ("Error" in line or "error" in line))
    ]


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    from study.report import write_report

    s = small_study()
    report = write_report(s.load(), tmp_path / "report.html", storage_url=s.storage)
    figures = len(parse(report.read_text(encoding="utf-8")).figures)
    url = report.resolve().as_uri()
    dom = chromium(["--virtual-time-budget=15000", "--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # every figure was drawn by plotly.js (each plot has at least one <svg class="main-svg">)
    drawn = dom.stdout.count('class="main-svg"')
    assert drawn >= figures, f"{drawn} svg for {figures} figures"
    shot = tmp_path / "report.png"
    run = chromium(
        [
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
            "--virtual-time-budget=15000",
            f"--screenshot={shot}",
            url,
        ],
        tmp_path / "profile-shot",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_errors(run.stderr) == []
    assert_not_blank(shot)
    if os.environ.get("STUDY_DOCS_SCREENSHOTS"):  # refresh docs/report.png for the README
        shutil.copy(shot, ROOT / "docs" / "report.png")
