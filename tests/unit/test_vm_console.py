"""Console parsing: markers, workload output, exit code, panics, and host-side phase stamps."""

import time

from vmharness import console as con

BOOT = ("[    0.3] PCI: Fatal: No config space access function found\r\n"
        "ISOBENCH-INITRD\r\nISOBENCH-INIT\r\nISOBENCH-READY 2.62\r\n"
        "hello\r\nworld\r\nISOBENCH-EXIT 0\r\n[    2.7] reboot: Power down\r\n")


def test_markers_in_order():
    names = [m.name for m in con.scan_markers(BOOT)]
    assert names == ["ISOBENCH-INITRD", "ISOBENCH-INIT", "ISOBENCH-READY", "ISOBENCH-EXIT"]
    assert con.scan_markers(BOOT)[2].arg == "2.62"


def test_output_between_ready_and_exit():
    assert con.workload_output(BOOT) == "hello\nworld\n"
    assert con.exit_code(BOOT) == 0


def test_output_without_trailing_newline_and_exit_code():
    text = "ISOBENCH-READY 1\r\nno newlineISOBENCH-EXIT 7\r\n"
    assert con.workload_output(text) == "no newline"
    assert con.exit_code(text) == 7


def test_no_exit_yet():
    assert con.exit_code("ISOBENCH-READY 1\r\npartial") is None


def test_kernel_panic_detected():
    text = "ISOBENCH-INITRD\r\n[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"
    assert con.panic_reason(text).startswith("Kernel panic - not syncing: VFS")


def test_shim_failure_reported():
    assert con.panic_reason("ISOBENCH-PANIC root disk /dev/vda could not be mounted\r\n") == \
        "root disk /dev/vda could not be mounted"


def test_watcher_stamps_phases_and_streams_output(tmp_path):
    log = tmp_path / "console.log"
    chunks = []
    t0 = time.monotonic()
    w = con.ConsoleWatcher(log, t0, echo=chunks.append).start()
    try:
        with open(log, "ab", buffering=0) as f:
            f.write(b"[ 0.1] booting\r\nISOBENCH-INITRD\r\nISOBENCH-INIT\r\n")
            assert w.wait_for("init_started", timeout_s=2) == "init_started"
            f.write(b"ISOBENCH-READY 1.0\r\nhel")
            f.write(b"lo\r\nISOBENCH-EXIT 3\r\n")
            assert w.wait_for("exited", timeout_s=2) == "exited"
    finally:
        w.stop()
    ph = w.phases()
    assert 0 <= ph["first_output"] <= ph["initrd"] <= ph["init_started"] <= ph["ready"] <= ph["exited"]
    assert "".join(chunks) == "hello\n"


def test_wait_for_times_out_and_notices_gone_domain(tmp_path):
    w = con.ConsoleWatcher(tmp_path / "none.log", time.monotonic()).start()
    try:
        t = time.monotonic()
        assert w.wait_for("ready", timeout_s=0.2) is None
        assert w.wait_for("ready", timeout_s=5, alive=lambda: False) is None
        assert time.monotonic() - t < 2
    finally:
        w.stop()


def test_panic_wakes_waiters(tmp_path):
    log = tmp_path / "c.log"
    log.write_bytes(b"Kernel panic - not syncing: Attempted to kill init!\r\n")
    w = con.ConsoleWatcher(log, time.monotonic()).start()
    try:
        assert w.wait_for("ready", timeout_s=2) == "panic"
    finally:
        w.stop()
