"""isobench's own container runtime: images, namespaces, cgroups, networking, lifecycle."""
