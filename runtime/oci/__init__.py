"""isobench as an OCI runtime: image config + run options -> runtime-spec ``config.json``
(:mod:`runtime.oci.specconv`), and bundles on disk and back (:mod:`runtime.oci.bundle`). ``isobench
run``, ``isobench-runtime`` (app.oci_cli) and the benchmark harness all create containers from a bundle;
terminals are :mod:`runtime.console`."""

RUNTIME_VERSION = "0.1.0"  # isobench-runtime --version and its features document
