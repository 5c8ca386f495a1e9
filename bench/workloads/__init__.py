"""Benchmark workloads, one module each (startup, cpu, memory, syscalls, disk, network, footprint, enforcement,
isolation, ephemerality). Every module exposes ``WORKLOAD``, a :class:`bench.workloads.base.Workload`
with its metrics (unit, lower/higher is better), its output parser(s) and a ``measure`` step."""
