"""Execution environments behind one interface (:mod:`bench.environments.base`): ``native`` (chroot into
the image's flat rootfs), ``container`` (the project's runtime, in-process), ``runc`` (OCI bundle run by
``runc run``) and ``vm`` (the VM harness). Build one with :func:`bench.runner.make_environment`."""
