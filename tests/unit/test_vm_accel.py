"""Accelerator choice with fakes: KVM only when the probe boot reaches the init shim in time."""

import pytest

from core.errors import VMError
from vmharness import accel
from vmharness.accel import BootOutcome, ProbeResult


def test_no_dev_kvm_means_tcg_without_booting():
    def boot(_bound):
        raise AssertionError("must not boot")

    a, reason = accel.decide(False, boot)
    assert a == "tcg" and "/dev/kvm missing" in reason


def test_kvm_present_but_hanging_falls_back_to_tcg_with_reason():
    seen = {}

    def hanging(bound):
        seen["bound"] = bound
        return BootOutcome(False, "guest hung, no console output", bound)

    a, reason = accel.decide(True, hanging, bound_s=4)
    assert a == "tcg"
    assert seen["bound"] == 4
    assert "did not reach the init shim within 4 s" in reason and "guest hung" in reason


def test_kvm_probe_error_falls_back_to_tcg_on_one_line():
    def failing(_bound):
        raise VMError("qemu: failed to set MSR\nassertion failed")

    a, reason = accel.decide(True, failing)
    assert a == "tcg" and "failed to set MSR" in reason and "\n" not in reason


def test_working_kvm_is_chosen():
    a, reason = accel.decide(True, lambda b: BootOutcome(True, "ok", 0.4))
    assert a == "kvm" and "0.40 s" in reason


def test_probe_is_cached_per_host_and_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(accel, "DEV_KVM", tmp_path / "kvm")
    (tmp_path / "kvm").write_text("")
    calls = []

    def boot(bound):
        calls.append(bound)
        return BootOutcome(False, "guest hung", bound)

    class P:
        root = tmp_path / "root"

    first = accel.probe_cached(P(), boot=boot)
    second = accel.probe_cached(P(), boot=boot)
    assert first.accel == second.accel == "tcg"
    assert len(calls) == 1
    # a different kernel release invalidates the cache
    monkeypatch.setattr(accel, "_host_key", lambda: ("host", "other-kernel"))
    accel.probe_cached(P(), boot=boot)
    assert len(calls) == 2


def test_forced_kvm_where_probe_failed_is_a_clear_error():
    res = ProbeResult("tcg", "nested virtualization unusable", 0.0)
    with pytest.raises(VMError, match="--accel kvm: KVM is not usable on this host: nested"):
        accel.choose("kvm", probe_fn=lambda: res)


def test_auto_uses_probe_and_tcg_needs_no_probe():
    res = ProbeResult("tcg", "why", 0.0)
    assert accel.choose("auto", probe_fn=lambda: res) == ("tcg", "why")
    assert accel.choose("tcg", probe_fn=lambda: pytest.fail("no probe"))[0] == "tcg"
