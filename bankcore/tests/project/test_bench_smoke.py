"""The benchmarks still run: ``bench/api.py``, ``bench/run.py``, ``bench/door.py``,
``bench/batch.py`` and ``bench/scale.py`` briefly on tiny data, each starting its own servers.
Figures are not checked (these machines are noisy; docs/performance.md), only that every path
answered what it should (no 401 from an expired token, no non-201; every stuck transfer settled),
that the table came out and that the books reconciled afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bankcore.testing.paths import ROOT

pytestmark = pytest.mark.slow


def _bench(*args: str) -> str:
    # A clean environment: the bench configures its own servers and settings, and must not pick
    # up this test run's (DJANGO_SETTINGS_MODULE, DB*_, REDIS_*).
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_bench_api_runs_every_path_and_reconciles():
    output = _bench("bench/api.py", "--seconds", "1", "--clients", "2", "--accounts", "40", "--rounds", "2")
    assert "unexpected answers" not in output, output[-4000:]
    for path in ("api", "api gc", "api read", "service", "service gc", "raw"):
        assert output.count(f"| {path} | ") == 2, output[-4000:]
    assert "median of 2: api/service" in output
    assert "reconcile after the run: OK" in output


def test_bench_api_open_loop_runs():
    output = _bench("bench/api.py", "--seconds", "1", "--clients", "2", "--accounts", "40", "--rate", "20")
    assert "unexpected answers" not in output, output[-4000:]
    assert "open loop at 20/s offered" in output and "at 20/s offered" in output.splitlines()[-2]
    assert "reconcile after the run: OK" in output


def test_bench_run_runs_and_reconciles():
    output = _bench("bench/run.py", "--seconds", "1", "--workers", "2", "--accounts", "40")
    for scenario in ("raw", "same", "cross"):
        assert f"| {scenario} | 2 |" in output, output[-4000:]
    assert "reconcile after the run: OK" in output


def test_bench_door_runs_beside_a_baseline_tree_and_reconciles():
    output = _bench(
        "bench/door.py", "--requests", "50", "--rounds", "1", "--accounts", "40", "--baseline-tree", str(ROOT)
    )
    for tree in ("this tree", "baseline"):
        assert output.count(f"| {tree} | 1 | ") == 1, output[-4000:]
        assert f"{tree}: door " in output
    assert "reconcile after the run: OK" in output


def test_bench_batch_runs_both_paths_reconciles_and_plots(tmp_path):
    output = _bench(
        "bench/batch.py",
        "--seconds",
        "1",
        "--clients",
        "2",
        "--batch-clients",
        "2",
        "--batch-size",
        "5",
        "--accounts",
        "40",
        "--plot",
        str(tmp_path / "batch.png"),
    )
    assert "unexpected answers" not in output, output[-4000:]
    # The figures drawn as asked, a PNG (bench/plot.py).
    assert (tmp_path / "batch.png").read_bytes().startswith(b"\x89PNG\r\n"), output[-4000:]
    for path in ("raw", "bulk"):
        assert output.count(f"| {path} | 2 | ") == 1, output[-4000:]
    assert "bulk/raw " in output and "'aborted'" not in output
    assert "reconcile after the run: OK" in output


def test_bench_scale_settles_every_kind_of_stuck_transfer_and_reconciles():
    output = _bench("bench/scale.py", "--transfers", "40", "--entries", "200", "--accounts", "40")
    for kind in ("forward", "void", "hint", "orphan"):
        assert f"recovery, {kind:>7}: 10 transfers in " in output, output[-4000:]
    assert "recovery, all: 40 transfers" in output
    assert "OK: the books balance." in output
