"""Docker's process rules (Entrypoint/Cmd/User/Env/WorkingDir over the image config), kept importable
under their old name: they live in :mod:`runtime.oci.specconv`, the one converter every environment
goes through (see issue 13)."""

from runtime.oci.specconv import (DEFAULT_PATH, ProcessSpec, command_of, exposed_ports, merge_env,
                                  process_spec)

__all__ = ["DEFAULT_PATH", "ProcessSpec", "command_of", "exposed_ports", "merge_env", "process_spec"]
