"""`edgecompile zoo`: show the bundled models and the accuracy they were measured at."""

from __future__ import annotations

import click

from edgecompile.zoo.registry import list_models


@click.command("zoo")
@click.option("--paths", is_flag=True, help="Also print each model's directory.")
def zoo(paths: bool) -> None:
    """List the bundled, trained models with their measured eval accuracy."""
    models = list_models()
    if not models:
        raise click.ClickException("no bundled models found in this installation")
    header = f"{'name':<14} {'kind':<13} {'task':<26} {'accuracy':>8} {'eval n':>6} {'params':>9}"
    click.echo(header)
    click.echo("-" * len(header))
    for m in models:
        c = m.card
        click.echo(f"{m.name:<14} {m.kind:<13} {c.task:<26} {c.eval_accuracy:>8.3f} "
                   f"{c.eval_count:>6} {c.parameters:>9,}")
        if paths:
            click.echo(f"  {m.path}")
