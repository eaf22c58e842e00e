"""targets / recipes / backends: what exists, and what can run on this machine."""

from __future__ import annotations

import click

from edgecompile.cli.common import handle_errors
from edgecompile.config.recipe import load_recipe
from edgecompile.config.resolve import known, origin
from edgecompile.config.target import load_target
from edgecompile.errors import EdgecompileError


@click.command("targets")
@handle_errors
def targets_cmd() -> None:
    """List the device targets with their tier, budgets and backend."""
    click.echo(f"{'target':<22} {'tier':<12} {'memory':>8} {'latency':>9}  {'backend':<11} {'from':<9} description")
    for path in known("target").values():
        t = load_target(path)
        click.echo(f"{t.name:<22} {t.tier:<12} {t.memory_budget_mb:>6}MB {t.latency_budget_ms:>7.0f}ms  {t.backend:<11} {origin(path):<9} {t.description}")


@click.command("recipes")
@handle_errors
def recipes_cmd() -> None:
    """List the recipes (this project's, the user's, the shipped ones) and the targets they compile for."""
    click.echo(f"{'recipe':<22} {'target':<22} {'preset':<12} {'calibration':<18} {'from':<9} description")
    for path in known("recipe").values():
        try:
            r = load_recipe(path).recipe
        except EdgecompileError as exc:
            click.echo(f"{path.stem:<22} INVALID: {exc}")
            continue
        click.echo(f"{r.name:<22} {r.target:<22} {r.precision_preset:<12} {r.calibration.method + '/' + r.calibration.set:<18} {origin(path):<9} {r.description}")


@click.command("backends")
@handle_errors
def backends_cmd() -> None:
    """List the backends and whether each can build and run on this machine (and why not)."""
    from edgecompile.backends.registry import backend_names, get_backend

    click.echo(f"{'backend':<10} {'build':<6} {'run':<6} why")
    for name in backend_names():
        backend = get_backend(name)
        a = backend.availability()
        click.echo(f"{name:<10} {'yes' if a.can_build else 'no':<6} {'yes' if a.can_run else 'no':<6} {a.reason}")
