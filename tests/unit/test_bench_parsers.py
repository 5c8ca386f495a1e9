"""Each workload's output parser on real output recorded from its tool on this kind of host
(tests/fixtures/tool_outputs/, recorded against loopback), plus malformed output -> one-line BenchError."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.workloads import cpu, disk, enforcement, memory, network
from core.errors import BenchError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "tool_outputs"


def text(name: str) -> str:
    return (FIX / name).read_text()


def test_sysbench_cpu_events_per_second():
    assert cpu.parse(text("sysbench_cpu.txt")) == pytest.approx(3468.31)


def test_sysbench_cpu_total_time():
    assert enforcement.sysbench_total_time_s(text("sysbench_cpu.txt")) == pytest.approx(2.0005)


def test_sysbench_memory_mib_per_second():
    assert memory.parse(text("sysbench_memory.txt")) == pytest.approx(5311.41)


def test_fio_single_job_json():
    assert disk.parse(text("fio_randread.json"))["randrwread"] > 0
    assert disk.parse(text("fio_seqwrite.json"))["seqwrite"] > 0


def test_fio_two_mixed_jobs_give_four_numbers():
    got = disk.parse(text("fio_mixed_jobs.json"))
    assert set(got) == set(disk.METRIC_NAMES)
    assert got["randread"] == pytest.approx(29138 / 1024)
    assert got["seqwrite"] == pytest.approx(739612 / 1024)
    argv = disk.command("/f", 32, 1.0)
    assert "--rw=randrw" in argv and "--rw=rw" in argv and argv.count("--stonewall") == 1


def test_fio_four_stonewalled_jobs():
    got = disk.parse(text("fio_four_jobs.json"))
    assert set(got) == {"randread", "randwrite", "seqread", "seqwrite"}
    assert got["randread"] == pytest.approx(52807 / 1024)
    assert got["seqwrite"] == pytest.approx(2693498 / 1024)


def test_fio_text_before_json_is_skipped():
    assert disk.parse("fio: some warning\n" + text("fio_seqwrite.json"))["seqwrite"] > 0


def test_wrk_latency_distribution():
    got = network.parse_wrk(text("wrk.txt"))
    assert got["http_requests_per_s"] == pytest.approx(2662.16)
    assert got["http_p50_ms"] == pytest.approx(1.04)
    assert got["http_p99_ms"] == pytest.approx(17.26)


def test_wrk_units():
    assert network._duration_s("250.00us") == pytest.approx(250e-6)
    assert network._duration_s("1.50s") == pytest.approx(1.5)


def test_iperf3_json_gbit():
    v = network.parse_iperf3(text("iperf3.json"))
    assert 0.01 < v < 1000 and math.isfinite(v)


def test_iperf3_error_reported():
    with pytest.raises(BenchError, match="iperf3: unable to connect"):
        network.parse_iperf3('{"start": {}, "error": "unable to connect to server"}')


@pytest.mark.parametrize("parser", [cpu.parse, memory.parse, disk.parse, network.parse_wrk, network.parse_iperf3])
def test_garbage_is_one_line_bench_error(parser):
    with pytest.raises(BenchError) as info:
        parser("Segmentation fault\n")
    assert "\n" not in str(info.value).strip()


def test_meminfo_total():
    assert enforcement.meminfo_total_mib("MemTotal:         236544 kB\nMemFree: 1 kB") == pytest.approx(231.0)


def test_sysbench_cpu_two_runs_in_one_output():
    one = text("sysbench_cpu.txt")
    assert cpu.parse_all(one + one) == [pytest.approx(3468.31)] * 2
    argv = cpu.both_command(2, 1.0)
    assert argv[:2] == ("/bin/sh", "-c") and "--threads=1" in argv[2] and "--threads=2" in argv[2]
