"""Per-issue micro-benchmarks (`python -m bench.micro.<name>`): each measures an issue's speed target
side by side with its reference (runc, bare qemu, native) in one run and prints ratios."""
