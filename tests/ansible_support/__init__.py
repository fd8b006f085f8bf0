"""Helpers for tests/test_ansible.py: a Debian 12 root built with debootstrap, used as a chroot."""
