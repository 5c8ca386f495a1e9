"""Ansible plugins isobench hands to ``ansible-playbook`` (loaded by Ansible, never imported by isobench)."""
