"""`isobench compare` on synthetic runs: identical -> no regression; 20% slower with low noise ->
regression and exit 1; noisy 3% -> same; direction-aware for higher-is-better metrics."""

import json

import numpy as np
import pytest

from app.cli import main
from bench.compare import CompareConfig, compare_samples, parse_threshold
from bench.results import Sample, append_samples, load_run
from core.errors import UsageError


def write_run(path, series, meta=None):
    """series: {(benchmark, environment, metric, direction): values}"""
    path.mkdir(parents=True)
    rows = [Sample(b, e, m, float(v), "ms" if d == "lower" else "ops/s", i, d)
            for (b, e, m, d), vals in series.items() for i, v in enumerate(vals)]
    append_samples(path, rows)
    (path / "meta.json").write_text(json.dumps(meta or {"hostname": "h", "accelerator": "tcg"}))
    return path


def noisy(median, rel_sd, n, seed):
    return median * (1 + np.random.default_rng(seed).normal(0, rel_sd, n))


KEY = ("startup", "container", "create_to_exit_ms", "lower")


def test_identical_runs_have_no_regression(tmp_path, capsys):
    vals = noisy(10.0, 0.02, 15, 1)
    base = write_run(tmp_path / "a", {KEY: vals})
    new = write_run(tmp_path / "b", {KEY: vals})
    assert main(["compare", str(base), str(new)]) == 0
    assert "0 slower" in capsys.readouterr().out


def test_twenty_percent_slower_is_a_regression(tmp_path, capsys):
    base = write_run(tmp_path / "a", {KEY: noisy(10.0, 0.01, 15, 1)})
    new = write_run(tmp_path / "b", {KEY: noisy(12.0, 0.01, 15, 2)})
    html = tmp_path / "cmp.html"
    assert main(["compare", str(base), str(new), "--threshold", "5%", "--p", "0.01", "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert "slower" in out and "1 slower" in out
    page = html.read_text()
    assert "1 slower" in page and "create_to_exit_ms" in page and "http" not in page.replace("http_", "")


def test_noisy_three_percent_is_same():
    base = load_like({KEY: noisy(10.0, 0.10, 15, 3)})
    new = load_like({KEY: noisy(10.3, 0.10, 15, 4)})
    [c] = compare_samples(base, new, CompareConfig(threshold=0.05, alpha=0.01))
    assert c.verdict == "same"


def test_low_noise_three_percent_is_below_threshold():
    base = load_like({KEY: noisy(10.0, 0.002, 20, 3)})
    new = load_like({KEY: noisy(10.3, 0.002, 20, 4)})
    [c] = compare_samples(base, new, CompareConfig(threshold=0.05))
    assert c.p_value < 0.01 and c.verdict == "same"  # significant but too small to matter


def test_direction_aware():
    key = ("cpu", "container", "events_per_s_1cpu", "higher")
    base = load_like({key: noisy(1000.0, 0.01, 12, 5)})
    worse = load_like({key: noisy(800.0, 0.01, 12, 6)})
    better = load_like({key: noisy(1200.0, 0.01, 12, 7)})
    assert compare_samples(base, worse)[0].verdict == "slower"
    assert compare_samples(base, better)[0].verdict == "faster"
    faster_start = compare_samples(load_like({KEY: noisy(12.0, 0.01, 12, 8)}),
                                   load_like({KEY: noisy(10.0, 0.01, 12, 9)}))
    assert faster_start[0].verdict == "faster"


def test_metrics_only_in_one_run():
    other = ("cpu", "vm", "events_per_s_1cpu", "higher")
    verdicts = {c.metric: c.verdict for c in compare_samples(load_like({KEY: [1.0, 2.0]}),
                                                              load_like({other: [3.0, 4.0]}))}
    assert verdicts == {"create_to_exit_ms": "only in base", "events_per_s_1cpu": "only in new"}


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), ("10", 0.10), ("2.5%", 0.025)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "150%", "-1%"])
def test_parse_threshold_rejects(text):
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


def test_bad_p_is_usage_error(tmp_path, capsys):
    base = write_run(tmp_path / "a", {KEY: [1.0, 2.0]})
    assert main(["compare", str(base), str(base), "--p", "2"]) == 2
    assert "--p" in capsys.readouterr().err


def load_like(series):
    import pandas as pd

    rows = [{"benchmark": b, "environment": e, "metric": m, "value": float(v), "unit": "u", "iteration": i,
             "direction": d} for (b, e, m, d), vals in series.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows)
