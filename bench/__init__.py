"""Benchmark harness, results, statistics, report, compare/check, and the `isobench` CLI."""
