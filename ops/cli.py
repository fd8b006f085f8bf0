"""`sosekni-ops`: the operator's command line (Typer + Rich)."""

from __future__ import annotations

import typer

from ops import (
    admin,
    backup,
    deploy,
    health,
    migrate,
    prune,
    queues,
    requests,
    sandbox,
    serve,
    stats,
    webhook,
)
from ops.common import OpsGroup

app = typer.Typer(
    cls=OpsGroup,
    name="sosekni-ops",
    help="Run and operate the SOSenki request-approval bot.\n\n"
    "Examples: sosekni-ops sandbox · sosekni-ops serve --workers 2 · sosekni-ops health"
    " · sosekni-ops deploy v1.4.0",
    no_args_is_help=True,
    # Plain help pages (Click's): Typer's Rich help renderer alone costs 0.2 s at every start.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
    pretty_exceptions_enable=False,
)
app.command()(serve.serve)
app.command()(serve.poll)
app.command()(sandbox.sandbox)
app.command()(health.health)
app.command()(deploy.deploy)
app.command()(deploy.rollback)
app.command()(deploy.releases)
app.command()(prune.prune)
app.command()(stats.stats)
app.add_typer(migrate.app, name="migrate")
app.add_typer(admin.app, name="admin")
app.add_typer(requests.app, name="requests")
app.add_typer(webhook.app, name="webhook")
app.add_typer(backup.app, name="backup")
app.add_typer(queues.outbox_app, name="outbox")
app.add_typer(queues.inbox_app, name="inbox")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
