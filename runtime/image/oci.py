"""OCI image constants shared by the store, the builder, base images and transfer.

A leaf module (imports nothing of the project) so that ``bases`` and ``store`` can both use them
without importing each other.
"""

FIXED_CREATED = "2000-01-01T00:00:00Z"  # reproducible images: the same build gives the same digest
