"""Provisioning (`ansible/`): lint, syntax, and a real apply of site.yml to a booted Debian 12.

A fresh copy of a debootstrapped Debian 12 root (cached under /var/cache/sosekni-tests, see
tests/ansible_support/rootfs.py) is booted with systemd as PID 1 (systemd-nspawn, sharing the
host's network; see tests/ansible_support/machine.py), and site.yml is applied into the running
container through the community.docker.nsenter connection with every role's real defaults:
systemd starts PostgreSQL, the app, nginx and the timers, the first deploy restarts the app
with the provisioned RESTART_COMMAND (sudo). Only the ports are free ones (the container
listens on the host's addresses), the certificate is self-signed and the Bot API is a fake.
The first release comes from a bare clone of this repository's HEAD; a second apply must
change nothing. The container is powered off after the module, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.ansible_support import rootfs
from tests.ansible_support.apply import Inventory, apply, tool
from tests.ansible_support.machine import Machine, booted
from tests.harness import ROOT, WebhookSender, free_port

ANSIBLE_DIR = ROOT / "ansible"
DOMAIN = "bot.provision.test"
TOKEN = "123456:TEST-provisioning-token"
WEBHOOK_SECRET = "provisioning-secret_7f3a"
DB_PASSWORD = "pw-Provision/ing+7#x"  # characters a DATABASE_URL must escape
APP_ROOT = "/opt/sosekni"
WEBHOOK_CLIENT = "127.0.0.2"  # a loopback address the test lets through to the webhook
TELEGRAM_NETWORKS = ("149.154.160.0/20", "91.108.4.0/22")
UNITS = ("sosekni.socket", "sosekni.service", "sosekni-backup.service", "sosekni-backup.timer")
RUNNING = ("sosekni.socket", "sosekni.service", "nginx.service", "postgresql@15-main.service",
           "sosekni-backup.timer", "certbot.timer")  # fmt: skip


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass
class Provisioned:
    root: Path
    machine: Machine
    telegram: FakeTelegram
    inventory: Inventory
    first: dict[str, int]
    first_output: str
    app_port: int
    pg_port: int
    http_port: int
    https_port: int
    scratch: Path


def test_ansible_lint_passes_with_the_production_profile() -> None:
    done = subprocess.run(
        [tool("ansible-lint"), "--profile", "production", "--offline"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


def test_playbook_syntax_check_passes() -> None:
    done = subprocess.run(
        [tool("ansible-playbook"), "-i", "inventories/production", "--syntax-check", "site.yml"],
        cwd=ANSIBLE_DIR,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_production_inventory_keeps_secrets_in_the_vault_only() -> None:
    group_vars = ANSIBLE_DIR / "inventories" / "production" / "group_vars" / "sosekni"
    assert (ANSIBLE_DIR / "inventories" / "production" / "hosts.yml").is_file()
    assert not (group_vars / "vault.yml").exists(), "a real vault.yml must not be committed"
    example = (group_vars / "vault.yml.example").read_text()
    for name in ("vault_sosekni_bot_token", "vault_sosekni_webhook_secret",
                 "vault_sosekni_database_password"):  # fmt: skip
        assert name in example
        assert f"{{{{ {name} }}}}" in (group_vars / "vars.yml").read_text()
    for role in ("postgresql", "sosekni", "nginx", "certbot", "backup"):
        assert (ANSIBLE_DIR / "roles" / role / "README.md").is_file(), role
        assert (ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml").is_file(), role


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    """site.yml applied once to a fresh, booted Debian 12; powered off and removed after."""
    scratch = tmp_path_factory.mktemp("provisioning")
    with rootfs.fresh_root() as root, FakeTelegram(token=TOKEN) as telegram:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        # The repository the deploy fetches from: this checkout's HEAD, inside the root.
        subprocess.run(
            ["git", "clone", "--bare", "--quiet", "--no-hardlinks", str(ROOT),
             str(root / "srv" / "sosekni.git")],
            check=True, timeout=300,
        )  # fmt: skip
        # It belongs to root here; the app user reads it (git refuses other users' repositories).
        (root / "etc" / "gitconfig").write_text("[safe]\n\tdirectory = /srv/sosekni.git\n")
        # The container listens on the host's addresses: free ports instead of 8080/5432/80/443.
        app_port, pg_port, http_port, https_port = (free_port() for _ in range(4))
        variables = {
            "sosekni_domain": DOMAIN,
            "sosekni_admin_telegram_ids": "1",
            "sosekni_repo_url": "file:///srv/sosekni.git",
            "sosekni_ref": head,
            "sosekni_port": app_port,
            "sosekni_workers": 1,
            "sosekni_log_format": "json",
            "sosekni_telegram_api_base_url": telegram.base_url,
            "sosekni_bot_token": "{{ vault_sosekni_bot_token }}",
            "sosekni_webhook_secret": "{{ vault_sosekni_webhook_secret }}",
            "sosekni_database_password": "{{ vault_sosekni_database_password }}",
            "postgresql_password": "{{ vault_sosekni_database_password }}",
            "postgresql_port": pg_port,
            "nginx_http_port": http_port,
            "nginx_https_port": https_port,
            "nginx_listen_ipv6": ipv6_available(),
            # The test's stand-in for Telegram's networks on the webhook path (127.0.0.1 stays
            # refused, as every address outside them).
            "nginx_webhook_allow": [*TELEGRAM_NETWORKS, f"{WEBHOOK_CLIENT}/32"],
            "certbot_self_signed": True,
        }
        secrets = {
            "vault_sosekni_bot_token": TOKEN,
            "vault_sosekni_webhook_secret": WEBHOOK_SECRET,
            "vault_sosekni_database_password": DB_PASSWORD,
        }
        with booted(root, scratch / "nspawn.log") as machine:
            connection = {
                "ansible_connection": "community.docker.nsenter",
                "ansible_nsenter_pid": machine.pid1,
            }
            inventory = Inventory(scratch / "inventory", connection, variables, secrets).write()
            done, first = apply(ANSIBLE_DIR, inventory, scratch / "apply-1.log")
            yield Provisioned(
                root, machine, telegram, inventory, first, done.stdout, app_port, pg_port,
                http_port, https_port, scratch,
            )  # fmt: skip
            rootfs.say("powering the container off and removing it")


def test_first_apply_succeeds_and_keeps_secrets_out_of_its_output(
    provisioned: Provisioned,
) -> None:
    assert provisioned.first["failed"] == 0
    assert provisioned.first["changed"] > 0
    for secret in (TOKEN, WEBHOOK_SECRET, DB_PASSWORD):
        assert secret not in provisioned.first_output


def test_every_unit_runs_under_systemd_and_none_failed(provisioned: Provisioned) -> None:
    machine = provisioned.machine
    active = machine.run("systemctl", "is-active", *RUNNING)
    assert active.stdout.split() == ["active"] * len(RUNNING), active.stdout + active.stderr
    failed = machine.run("systemctl", "--failed", "--no-legend", "--plain")
    assert failed.returncode == 0 and failed.stdout.strip() == "", failed.stdout
    assert machine.state() == "running"
    timers = machine.run("systemctl", "list-timers", "--all", "--no-legend", "--plain").stdout
    assert "sosekni-backup.timer" in timers and "certbot.timer" in timers, timers
    units = ("sosekni.socket", "sosekni.service", "nginx.service", "postgresql.service",
             "sosekni-backup.timer", "certbot.timer")  # fmt: skip
    enabled = machine.run("systemctl", "is-enabled", *units)
    assert enabled.stdout.split() == ["enabled"] * len(units), enabled.stdout + enabled.stderr


def test_the_container_listens_on_the_ports_it_was_given_only(provisioned: Provisioned) -> None:
    """It shares the host's network: nothing of it may take a port the host could be using."""
    given = {provisioned.app_port, provisioned.pg_port, provisioned.http_port,
             provisioned.https_port}  # fmt: skip
    assert provisioned.machine.listening_ports() == given


def test_webhook_was_registered_with_the_url_and_the_secret(provisioned: Provisioned) -> None:
    calls = provisioned.telegram.calls("setWebhook")
    assert calls, provisioned.telegram.summary()
    assert calls[-1].params["url"] == f"https://{DOMAIN}/webhook/telegram"
    assert calls[-1].params["secret_token"] == WEBHOOK_SECRET


def test_release_is_installed_and_serving(provisioned: Provisioned) -> None:
    root, machine = provisioned.root, provisioned.machine
    current = root / APP_ROOT.lstrip("/") / "current"
    assert current.is_symlink()
    assert (current / ".sosekni-release.json").is_file()
    done = machine.run(f"{APP_ROOT}/current/.venv/bin/sosekni-ops", "--help", user="sosekni")
    assert done.returncode == 0, done.stderr
    assert "deploy" in done.stdout
    releases = machine.run(
        "sh", "-c", f"cd {APP_ROOT}/current && COLUMNS=200 .venv/bin/sosekni-ops releases",
        user="sosekni",
    )  # fmt: skip
    assert releases.returncode == 0, releases.stderr
    assert "deployed" in releases.stdout
    # Served by the unit systemd runs (the deploy restarted it through sudo).
    main_pid = machine.run("systemctl", "show", "-p", "MainPID", "--value", "sosekni").stdout
    assert int(main_pid) > 0
    health = httpx.get(f"http://127.0.0.1:{provisioned.app_port}/health", timeout=10)
    assert health.status_code == 200, health.text
    # The deploy backed up the (empty) database before migrating.
    backups = list((root / "var/backups/sosekni").glob("sosekni-sosekni-*.dump"))
    assert backups, "the deploy took no backup"


def test_settings_file_is_private_to_the_app_user(provisioned: Provisioned) -> None:
    machine = provisioned.machine
    env = provisioned.root / APP_ROOT.lstrip("/") / "shared" / ".env"
    status = env.stat()
    assert status.st_mode & 0o777 == 0o600
    owner = machine.run("stat", "-c", "%U:%G", f"{APP_ROOT}/shared/.env")
    assert owner.stdout.strip() == "sosekni:sosekni"
    text = env.read_text()
    assert f"TELEGRAM_BOT_TOKEN={TOKEN}\n" in text
    assert f"WEBHOOK_SECRET={WEBHOOK_SECRET}\n" in text
    assert "RESTART_COMMAND=sudo -n /usr/bin/systemctl restart sosekni\n" in text
    assert f"DEPLOY_ROOT={APP_ROOT}\n" in text
    sudoers = machine.run("visudo", "-cf", "/etc/sudoers.d/sosekni")
    assert sudoers.returncode == 0, sudoers.stdout + sudoers.stderr


async def test_database_and_user_exist_with_the_vaulted_password(
    provisioned: Provisioned,
) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=provisioned.pg_port,
        user="sosekni",
        password=DB_PASSWORD,
        database="sosekni",
        timeout=10,
    )
    try:
        assert await conn.fetchval("SELECT current_user") == "sosekni"
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'client_request'"
        )
        assert tables == 1  # migrated by the deploy
        assert await conn.fetchval("SHOW listen_addresses") == "localhost"
    finally:
        await conn.close()


def test_nginx_configuration_is_valid(provisioned: Provisioned) -> None:
    done = provisioned.machine.run("nginx", "-t")
    assert done.returncode == 0, done.stderr
    assert (provisioned.root / "etc/nginx/sites-enabled/sosekni.conf").is_symlink()
    site = (provisioned.root / "etc/nginx/sites-available/sosekni.conf").read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert "allow 149.154.160.0/20;" in site and "allow 91.108.4.0/22;" in site
    assert "client_max_body_size 1m;" in site
    assert not (provisioned.root / "etc/nginx/sites-enabled/default").exists()


def test_systemd_units_verify_without_warnings(provisioned: Provisioned) -> None:
    paths = [f"/etc/systemd/system/{unit}" for unit in UNITS]
    done = provisioned.machine.run("systemd-analyze", "verify", *paths)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""
    etc = provisioned.root / "etc/systemd/system"
    unit = (etc / "sosekni.service").read_text()
    for line in ("Type=exec", "Restart=on-failure", "KillMode=mixed", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):  # fmt: skip
        assert f"\n{line}\n" in unit, line
    backup = (etc / "sosekni-backup.service").read_text()
    assert "backup prune --keep-days 30" in backup
    assert "ReadWritePaths=/var/backups/sosekni" in backup
    hook = provisioned.root / "etc/letsencrypt/renewal-hooks/deploy/reload-nginx"
    assert os.access(hook, os.X_OK) and "systemctl reload nginx" in hook.read_text()


def test_the_backup_service_writes_a_dump_that_verifies(provisioned: Provisioned) -> None:
    machine = provisioned.machine
    folder = provisioned.root / "var/backups/sosekni"
    before = set(folder.glob("sosekni-sosekni-*.dump"))
    started = machine.run("systemctl", "start", "sosekni-backup.service", timeout=300)
    assert started.returncode == 0, (
        started.stderr
        + machine.run("journalctl", "-u", "sosekni-backup", "--no-pager", "-n", "50").stdout
    )
    result = machine.run("systemctl", "show", "-p", "Result", "--value", "sosekni-backup")
    assert result.stdout.strip() == "success"
    new = set(folder.glob("sosekni-sosekni-*.dump")) - before
    assert len(new) == 1, sorted(p.name for p in folder.iterdir())
    dump = f"/var/backups/sosekni/{new.pop().name}"
    verify = f"cd {APP_ROOT}/current && COLUMNS=200 .venv/bin/sosekni-ops backup verify {dump}"
    verified = machine.run("sh", "-c", verify, user="sosekni", timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "checksum ok" in verified.stdout


def test_nginx_serves_https_and_opens_the_webhook_to_telegram_only(
    provisioned: Provisioned,
) -> None:
    root = provisioned.root
    https = f"https://127.0.0.1:{provisioned.https_port}"
    http = f"http://127.0.0.1:{provisioned.http_port}"
    health = httpx.get(f"{https}/health", verify=False, timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    # The webhook answers Telegram's networks only; 127.0.0.1 is not one of them.
    refused = httpx.post(f"{https}/webhook/telegram", json={}, verify=False, timeout=5)
    assert refused.status_code == 403
    too_big = httpx.post(
        f"{https}/webhook/telegram", content=b"x" * (2 * 2**20), verify=False, timeout=10
    )
    assert too_big.status_code == 413
    assert httpx.get(f"{https}/", verify=False, timeout=5).status_code == 404
    # HTTP: redirected to HTTPS, except the ACME challenge.
    moved = httpx.get(f"{http}/anything?x=1", timeout=5)
    assert moved.status_code == 301
    assert moved.headers["location"].endswith(f":{provisioned.https_port}/anything?x=1")
    challenge = root / "var/www/letsencrypt/.well-known/acme-challenge/probe"
    challenge.write_text("token-for-acme")
    acme = httpx.get(f"{http}/.well-known/acme-challenge/probe", timeout=5)
    assert acme.status_code == 200 and acme.text == "token-for-acme"
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = context.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", provisioned.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
        ):
            assert tls.version() == version.name.replace("v1_", "v1.")


def wait_for_health(url: str, timeout: float = 60) -> httpx.Response:
    """The app's /health once it answers 200 after a restart (its last answer on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200 or time.monotonic() > deadline:
                return answer
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_the_app_user_may_restart_its_service_and_nothing_else(
    provisioned: Provisioned,
) -> None:
    machine = provisioned.machine
    rule = (provisioned.root / "etc/sudoers.d/sosekni").read_text()
    assert "NOPASSWD: /usr/bin/systemctl restart sosekni" in rule
    before = machine.run("systemctl", "show", "-p", "MainPID", "--value", "sosekni").stdout
    stop = machine.run("sudo", "-n", "/usr/bin/systemctl", "stop", "sosekni", user="sosekni")
    assert stop.returncode != 0
    assert machine.run("systemctl", "is-active", "sosekni").stdout.strip() == "active"
    restart = machine.run(
        "sudo", "-n", "/usr/bin/systemctl", "restart", "sosekni", user="sosekni", timeout=120
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    after = machine.run("systemctl", "show", "-p", "MainPID", "--value", "sosekni").stdout
    assert int(after) > 0 and after != before
    health = wait_for_health(f"http://127.0.0.1:{provisioned.app_port}/health")
    assert health.status_code == 200, health.text


def test_second_apply_changes_nothing(provisioned: Provisioned) -> None:
    calls_before = len(provisioned.telegram.calls("setWebhook"))
    done, second = apply(ANSIBLE_DIR, provisioned.inventory, provisioned.scratch / "apply-2.log")
    changed = [line for line in done.stdout.splitlines() if line.startswith("changed:")]
    assert second["changed"] == 0, "\n".join(changed) + "\n" + done.stdout[-4000:]
    assert second["failed"] == 0
    assert len(provisioned.telegram.calls("setWebhook")) == calls_before
    for secret in (TOKEN, WEBHOOK_SECRET, DB_PASSWORD):
        assert secret not in done.stdout


def journal_cursor(machine: Machine) -> str:
    """Where the container's journal ends now (read the lines after it with `journal_since`)."""
    shown = machine.run("journalctl", "-n", "0", "--show-cursor", "--no-pager").stdout
    return shown.strip().rsplit("-- cursor: ", 1)[1]


def journal_since(machine: Machine, cursor: str, unit: str = "sosekni.service") -> str:
    """The unit's lines after `cursor`: the app's own and systemd's about the unit."""
    shown = machine.run(
        "journalctl", "-u", unit, "--after-cursor", cursor, "-o", "cat", "--no-pager"
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


START_LIMIT_PACE = 3.0  # seconds between two restarts of the test: 4 starts in 10 s at most
# What a stop that is not clean leaves in the journal.
UNCLEAN = ("SIGKILL", "Killing process", "status=1/", "Failed with result", "Traceback",
           "Event loop is closed", "Experienced exception")  # fmt: skip


def test_ten_restarts_and_a_stop_end_cleanly(provisioned: Provisioned) -> None:
    """Every stop ends with status 0 and nothing left for systemd to SIGKILL."""
    machine = provisioned.machine
    health = f"http://127.0.0.1:{provisioned.app_port}/health"
    cursor = journal_cursor(machine)
    started = -START_LIMIT_PACE
    for _ in range(10):
        # At an operator's pace: systemd refuses a 5th start within 10 s (StartLimitBurst).
        time.sleep(max(0.0, started + START_LIMIT_PACE - time.monotonic()))
        started = time.monotonic()
        done = machine.run("systemctl", "restart", "sosekni", timeout=120)
        assert done.returncode == 0, done.stderr
        assert wait_for_health(health).status_code == 200  # each stop meets a ready server
    stopped = machine.run("systemctl", "stop", "sosekni", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    shown = machine.run(
        "systemctl", "show", "-p", "ExecMainCode", "-p", "ExecMainStatus", "-p", "Result",
        "sosekni",
    ).stdout  # fmt: skip
    assert dict(line.split("=", 1) for line in shown.split()) == {
        "ExecMainCode": "1",  # CLD_EXITED: it exited by itself, not killed by a signal
        "ExecMainStatus": "0",
        "Result": "success",
    }
    journal = journal_since(machine, cursor)
    assert journal.count("Deactivated successfully") == 11, journal[-4000:]
    for sign in UNCLEAN:
        assert sign not in journal, journal[-4000:]
    started = machine.run("systemctl", "start", "sosekni", timeout=120)
    assert started.returncode == 0, started.stderr
    assert wait_for_health(health).status_code == 200


def ops_as_service(provisioned: Provisioned, *args: str) -> subprocess.CompletedProcess[str]:
    """`sosekni-ops ARGS` as an operator runs it: the app user, in current/, no options."""
    command = f"cd {APP_ROOT}/current && COLUMNS=200 .venv/bin/sosekni-ops {' '.join(args)}"
    return provisioned.machine.run("sh", "-c", command, user="sosekni", timeout=900)


async def test_deploy_and_rollback_refuse_no_webhook(provisioned: Provisioned) -> None:
    """Webhooks at 20/s through nginx while `deploy` and then `rollback` restart the app:
    every POST is answered 200 and every update is handled once. deploy and rollback run
    as the app user without options: the health URL from shared/.env, the restart through
    the provisioned RESTART_COMMAND (sudo)."""
    telegram = provisioned.telegram
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    sender = WebhookSender(
        f"https://127.0.0.1:{provisioned.https_port}", 0.05,
        local_address=WEBHOOK_CLIENT, verify=False, secret=WEBHOOK_SECRET,
    )  # fmt: skip
    serving = provisioned.machine.run("readlink", f"{APP_ROOT}/current").stdout.strip()
    try:
        sender.start()
        sender.wait_for(10)
        started = time.monotonic()
        deployed = ops_as_service(provisioned, "deploy", head)
        deploy_s = time.monotonic() - started
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"127.0.0.1:{provisioned.app_port}/health" in deployed.stdout
        sender.wait_for(len(sender.answers) + 10)
        started = time.monotonic()
        rolled = ops_as_service(provisioned, "rollback")
        rollback_s = time.monotonic() - started
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        sender.wait_for(len(sender.answers) + 10)
    finally:
        answers = sender.finish()
    refused = sender.refused()
    rootfs.say(
        f"deploy {deploy_s:.1f}s, rollback {rollback_s:.1f}s; {len(answers)} webhooks "
        f"through nginx, {len(refused)} refused"
    )
    assert not refused, f"{len(refused)} of {len(answers)} refused: {refused}"
    # The first release serves again; the deployed one says where it went.
    assert provisioned.machine.run("readlink", f"{APP_ROOT}/current").stdout.strip() == serving
    assert "rolled back to" in ops_as_service(provisioned, "releases").stdout
    conn = await asyncpg.connect(
        host="127.0.0.1", port=provisioned.pg_port, user="sosekni", password=DB_PASSWORD,
        database="sosekni", timeout=10,
    )  # fmt: skip
    try:
        posted = sorted(answers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every update handled and its answer sent
            handled = await conn.fetchval(
                "SELECT count(*) FROM inbox_update WHERE update_id = ANY($1) AND status = 'done'",
                posted,
            )
            if handled == len(posted) and all(
                telegram.calls("sendMessage", chat_id=chat) for chat in sender.chats.values()
            ):
                break
            await asyncio.sleep(0.2)
        stored = await conn.fetch(
            "SELECT update_id, status FROM inbox_update WHERE update_id = ANY($1)", posted
        )
        assert sorted(row["update_id"] for row in stored) == posted
        assert {row["status"] for row in stored} == {"done"}
    finally:
        await conn.close()
    answered = {
        chat: len(telegram.calls("sendMessage", chat_id=chat)) for chat in sender.chats.values()
    }
    assert set(answered.values()) == {1}, answered


def test_the_journal_holds_json_log_lines_without_the_secrets(provisioned: Provisioned) -> None:
    journal = provisioned.machine.run(
        "journalctl", "-u", "sosekni.service", "-o", "cat", "--no-pager"
    )
    assert journal.returncode == 0, journal.stderr
    records = []
    for line in journal.stdout.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, journal.stdout[-3000:]
    assert all({"time", "level", "message"} <= record.keys() for record in records), records[:3]
    for secret in (TOKEN, WEBHOOK_SECRET, DB_PASSWORD):
        assert secret not in journal.stdout
