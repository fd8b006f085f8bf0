"""Helpers for tests/test_ansible.py: a Debian 12 root from debootstrap, booted with systemd."""
