"""Applying ansible/site.yml to a booted container (the community.docker.nsenter connection)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.ansible_support import rootfs

BIN = Path(sys.executable).parent
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def tool(name: str) -> str:
    """An Ansible command from the project's virtual environment (uv's dev dependencies)."""
    path = BIN / name
    if not path.exists():
        raise rootfs.RootError(f"{path} is missing: run `uv sync` (ansible is a dev dependency)")
    return str(path)


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of the one host, e.g. {'ok': 80, 'changed': 0, ...}."""
    found = list(RECAP.finditer(output))
    if len(found) != 1:
        raise AssertionError(f"expected one PLAY RECAP line, found {len(found)}:\n{output[-3000:]}")
    return {k: int(v) for k, v in found[0].groupdict().items() if k != "host"}


@dataclass
class Inventory:
    """A test inventory for one host: how to reach it, plain variables, a vault with the secrets."""

    directory: Path
    connection: dict[str, Any]
    variables: dict[str, Any]
    secrets: dict[str, str]
    vault_password: str = "test-vault-password"
    password_file: Path = field(init=False)

    def write(self) -> Inventory:
        group_vars = self.directory / "group_vars" / "sosekni"
        group_vars.mkdir(parents=True)
        hosts = {
            "sosekni": {
                "hosts": {
                    "provisioned": {
                        **self.connection,
                        "ansible_python_interpreter": "/usr/bin/python3",
                    }
                }
            }
        }
        (self.directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (group_vars / "vars.yml").write_text(yaml.safe_dump(self.variables, sort_keys=True))
        self.password_file = self.directory / "vault-password"
        self.password_file.write_text(self.vault_password + "\n")
        self.password_file.chmod(0o600)
        vault = group_vars / "vault.yml"
        vault.write_text(yaml.safe_dump(self.secrets))
        subprocess.run(
            [tool("ansible-vault"), "encrypt", "--vault-password-file", str(self.password_file),
             str(vault)],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert vault.read_text().startswith("$ANSIBLE_VAULT;")
        return self


def ansible_env(ansible_dir: Path, scratch: Path) -> dict[str, str]:
    """A small, explicit environment: the nsenter connection passes it on to the container."""
    return {
        **rootfs.root_env(),
        "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
        "ANSIBLE_HOME": str(scratch / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(scratch / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false",
    }


def apply(
    ansible_dir: Path, inventory: Inventory, log: Path, timeout: float = 1500
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """ansible-playbook -i <inventory> site.yml; raises with the end of the log if it fails."""
    command = [
        tool("ansible-playbook"), "-i", str(inventory.directory),
        "--vault-password-file", str(inventory.password_file), "site.yml",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            command,
            cwd=ansible_dir,
            env=ansible_env(ansible_dir, log.parent),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    output = log.read_text(errors="replace")
    done.stdout = output
    rootfs.say(f"ansible-playbook site.yml ({log.name}): {time.monotonic() - started:.0f}s")
    if done.returncode != 0:
        raise AssertionError(
            f"ansible-playbook failed with {done.returncode}; the end of {log}:\n{output[-6000:]}"
        )
    return done, recap(output)
