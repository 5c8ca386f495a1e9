"""Images: the OCI layout store, base images, the Dockerfile builder and layer unpacking.

Modules: ``store`` (ImageStore, ImageRecord, LayerRef: resolve, layer_dirs, flat_rootfs), ``layers``
(reproducible layer tars, whiteouts, tar-slip checks), ``bases`` (busybox, debian:bookworm, scratch),
``dockerfile`` (parser and substitution), ``builder`` (steps, cache), ``runstep`` (RUN executor),
``transfer`` (save/load/import). Importing this package imports none of them (CLI start-up is measured).
"""
