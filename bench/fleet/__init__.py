"""Fleet runs: the same benchmark on several hosts, driven by Ansible, fetched into one directory.

One machine answers "containers vs VMs here"; choosing between machine types (a KVM host, a cgroup v2
host, another kernel) needs the same matrix on each of them. :mod:`bench.fleet.inventory` reads and
checks an Ansible inventory, :mod:`bench.fleet.orchestrate` runs ``playbook.yml`` per host (copy the
project, ``make setup``, ``isobench bench`` under a per-host lock, fetch the run) and
:mod:`bench.fleetresults` merges what came back.
"""
