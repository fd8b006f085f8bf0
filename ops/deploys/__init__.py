"""Deploys by concern: the release layout (`layout`), one step as a subprocess (`steps`),
and the orchestration (`deployer`). `ops.deploy` holds the Typer commands."""
