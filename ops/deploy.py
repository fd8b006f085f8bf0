"""`deploy [REF]`, `rollback [--to RELEASE] [--restore-db]`, `releases`.

Layout under DEPLOY_ROOT:

    repo.git/                         a bare mirror of REPO_URL
    releases/<UTC time>-<short sha>/  one tree per release, with its own .venv
    current -> releases/…             switched atomically (rename of a new symlink)
    shared/.env                       the service's settings, linked into every release

Each release records what happened to it in `.sosekni-release.json`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ops import backups
from ops.common import console, fail, plain, settings_or_fail
from ops.deploys.deployer import Deployer
from ops.deploys.layout import DeployError, Layout

HealthUrl = Annotated[
    str | None,
    typer.Option(
        help="The app's health URL, polled after the restart (default: "
        "http://SERVE_HOST:SERVE_PORT/health of the service's settings, shared/.env).",
    ),
]
HealthTimeout = Annotated[
    float, typer.Option(help="Seconds to wait for the app to become healthy.", min=1)
]


def _deployer(health_url: str | None, health_timeout: float) -> Deployer:
    return Deployer(settings_or_fail(need_admins=False), health_url, health_timeout)


def deploy(
    ref: Annotated[str, typer.Argument(help="Branch, tag or commit to deploy.")] = "main",
    health_url: HealthUrl = None,
    health_timeout: HealthTimeout = 60,
) -> None:
    """Deploy REF: fetch, uv sync, backup, migrate, switch, restart, health check.

    Any failure after the switch rolls back to the previous release by itself.

    Examples: sosekni-ops deploy · sosekni-ops deploy v1.4.0
    """
    deployer = _deployer(health_url, health_timeout)
    try:
        with deployer.layout.lock():
            release = deployer.deploy(ref)
    except (DeployError, backups.BackupError) as exc:
        fail(f"deploy of {ref} failed: {exc}", deployer.settings)
    console.print(
        Text.assemble(
            ("deployed", "green"), " ", plain(f"{release.name} ({ref} at {release.sha[:12]})")
        )
    )


def rollback(
    to: Annotated[str | None, typer.Option("--to", help="The release to return to.")] = None,
    restore_db: Annotated[
        bool,
        typer.Option(
            "--restore-db",
            help="Restore the backup taken before the current release was deployed, "
            "instead of migrating back.",
        ),
    ] = False,
    health_url: HealthUrl = None,
    health_timeout: HealthTimeout = 60,
) -> None:
    """Return to the previous (or a named) release: migrate back, switch, restart, check.

    A rollback that failed is done again by the same command: the release it left stays
    marked "rolling back to …" until it has finished.

    Examples: sosekni-ops rollback · sosekni-ops rollback --to 20261125T101500Z-1a2b3c4
    """
    deployer = _deployer(health_url, health_timeout)
    try:
        with deployer.layout.lock():
            target = deployer.rollback(to, restore_db)
    except (DeployError, backups.BackupError) as exc:
        fail(f"rollback failed: {exc}", deployer.settings)
    console.print(Text.assemble(("rolled back", "green"), " to ", plain(target)))


def releases() -> None:
    """List releases, oldest first, marking the current one.

    Example: sosekni-ops releases
    """
    settings = settings_or_fail(need_admins=False)
    layout = Layout(settings.deploy_root)
    current = layout.current_name()
    table = Table("", "release", "ref", "commit", "migrations", "status", title=str(layout.root))
    rows: list[Any] = []
    for name in layout.names():
        r = layout.load(name)
        rows.append(r)
        status = plain(r.status)
        if r.rolling_back_to is not None:  # unfinished: `rollback` finishes it
            status.stylize("bold red")
        table.add_row(
            "[green]→ current[/]" if name == current else "", plain(name), plain(r.ref),
            plain(r.sha[:12]), plain(r.migration_head or "—"), status,
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print(plain(f"no releases under {layout.releases}"))
