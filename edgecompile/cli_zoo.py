"""`edgecompile zoo`: show the bundled models and the accuracy they were measured at (a table, or --json)."""

from __future__ import annotations

import sys

import click

from edgecompile.cli.common import handle_errors
from edgecompile.cli.output import emit_json, json_option
from edgecompile.zoo.registry import list_models


@click.command("zoo")
@click.option("--paths", is_flag=True, help="Also print each model's directory.")
@json_option
@handle_errors
def zoo(paths: bool, as_json: bool) -> None:
    """List the bundled, trained models with their measured eval accuracy."""
    models = list_models()
    if not models:
        raise click.ClickException("no bundled models found in this installation")
    if as_json:
        emit_json({"models": [{"name": m.name, "kind": m.kind, "task": m.card.task, "eval_accuracy": m.card.eval_accuracy, "eval_count": m.card.eval_count, "parameters": m.card.parameters, "path": str(m.path)} for m in models]})
        return
    width = max(14, *(len(m.name) for m in models))
    header = f"{'name':<{width}} {'kind':<13} {'task':<26} {'accuracy':>8} {'eval n':>6} {'params':>9}"
    click.echo(header)
    click.echo("-" * len(header))
    for m in models:
        c = m.card
        click.echo(f"{m.name:<{width}} {m.kind:<13} {c.task:<26} {c.eval_accuracy:>8.3f} {c.eval_count:>6} {c.parameters:>9,}")
        if paths:
            click.echo(f"  {m.path}")
    sys.stdout.flush()
