"""targets / recipes / backends: what exists, and what can run on this machine (a table, or --json)."""

from __future__ import annotations

import sys
from typing import Any

import click

from edgecompile.cli.common import handle_errors
from edgecompile.cli.output import emit_json, json_option
from edgecompile.config.recipe import load_recipe
from edgecompile.config.resolve import known, origin
from edgecompile.config.target import load_target
from edgecompile.errors import EdgecompileError


def _print(header: str, lines: list[str]) -> None:
    click.echo(header)
    for line in lines:
        click.echo(line)
    sys.stdout.flush()  # a closed pipe (`| head`) surfaces here, where handle_errors turns it into exit 0


@click.command("targets")
@json_option
@handle_errors
def targets_cmd(as_json: bool) -> None:
    """List the device targets with their tier, budgets and backend."""
    rows: list[dict[str, Any]] = []
    for path in known("target").values():
        t = load_target(path)
        rows.append({"name": t.name, "tier": t.tier, "memory_budget_mb": t.memory_budget_mb, "latency_budget_ms": t.latency_budget_ms, "backend": t.backend, "from": origin(path), "path": str(path), "description": t.description})
    if as_json:
        emit_json({"targets": rows})
        return
    _print(f"{'target':<22} {'tier':<12} {'memory':>8} {'latency':>9}  {'backend':<11} {'from':<9} description", [f"{r['name']:<22} {r['tier']:<12} {r['memory_budget_mb']:>6}MB {r['latency_budget_ms']:>7.0f}ms  {r['backend']:<11} {r['from']:<9} {r['description']}" for r in rows])


@click.command("recipes")
@json_option
@handle_errors
def recipes_cmd(as_json: bool) -> None:
    """List the recipes (this project's, the user's, the shipped ones) and the targets they compile for."""
    rows: list[dict[str, Any]] = []
    for path in known("recipe").values():
        try:
            r = load_recipe(path).recipe
        except EdgecompileError as exc:
            rows.append({"name": path.stem, "valid": False, "error": str(exc), "from": origin(path), "path": str(path)})
            continue
        rows.append({"name": r.name, "valid": True, "target": r.target, "preset": r.precision_preset, "calibration": f"{r.calibration.method}/{r.calibration.set}", "from": origin(path), "path": str(path), "description": r.description})
    if as_json:
        emit_json({"recipes": rows})
        return
    lines = [f"{r['name']:<22} INVALID: {r['error']}" if not r["valid"] else f"{r['name']:<22} {r['target']:<22} {r['preset']:<12} {r['calibration']:<18} {r['from']:<9} {r['description']}" for r in rows]
    _print(f"{'recipe':<22} {'target':<22} {'preset':<12} {'calibration':<18} {'from':<9} description", lines)


@click.command("backends")
@json_option
@handle_errors
def backends_cmd(as_json: bool) -> None:
    """List the backends and whether each can build and run on this machine (and why not)."""
    from edgecompile.backends.registry import backend_names, get_backend

    rows = []
    for name in backend_names():
        a = get_backend(name).availability()
        rows.append({"name": name, "can_build": bool(a.can_build), "can_run": bool(a.can_run), "reason": a.reason})
    if as_json:
        emit_json({"backends": rows})
        return
    _print(f"{'backend':<10} {'build':<6} {'run':<6} why", [f"{r['name']:<10} {'yes' if r['can_build'] else 'no':<6} {'yes' if r['can_run'] else 'no':<6} {r['reason']}" for r in rows])
