"""build / export / annotate / calibrate / validate: run the pipeline up to a stage."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import click

from edgecompile.cli.common import context_options, echo_stage, handle_errors, make_context, verdict_line
from edgecompile.cli.output import echo, json_option, machine_output, quiet
from edgecompile.stages import STAGE_ORDER
from edgecompile.stages.base import StageResult
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import run_until
from edgecompile.stages.validate import publish_report


def _on_result(result: StageResult) -> None:
    if not quiet():
        echo_stage(result)


def _run(ctx: BuildContext, stage: str, force: frozenset[str]) -> list[StageResult]:
    """run_until; under -q the stages' informational lines are dropped (errors still raise and print)."""
    if not quiet():
        return run_until(ctx, stage, force=force, on_result=_on_result)
    with redirect_stdout(io.StringIO()):
        return run_until(ctx, stage, force=force, on_result=_on_result)


def _verdict(ctx: BuildContext) -> tuple[dict[str, Any], int]:
    """Publish the report and print the verdict (only its last line under -q); return (report, exit code)."""
    report = publish_report(ctx)
    if not quiet():
        return report, verdict_line(report, ctx.path("report.json"))
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = verdict_line(report, ctx.path("report.json"))
    click.echo(buf.getvalue().strip().splitlines()[-1])
    return report, code


def verdict_json(command: str, ctx: BuildContext, report: dict[str, Any], code: int) -> dict[str, Any]:
    """The --json object of a verdict-producing command."""
    return {
        "ok": code == 0,
        "command": command,
        "verdict": report["verdict"],
        "exit_code": int(code),
        "recipe": report.get("recipe"),
        "target": report.get("target"),
        "tier": report.get("tier"),
        "model": report.get("model"),
        "build_dir": str(ctx.build_dir),
        "report": str(ctx.path("report.json")),
        "html": str(ctx.path("validate", "report.html")),
        "where": (report.get("where") or {}).get("description"),
        "gates": report.get("gates", []),
        "metrics": report.get("metrics", {}),
    }


@click.command("build")
@context_options
@click.option("--force", is_flag=True, help="Redo every stage even if its inputs did not change.")
@click.option("--fallback", is_flag=True, help="After a failed gate, raise the precision of the worst layers step by step until every gate passes (also: fallback.enabled in the recipe).")
@json_option
@handle_errors
def build_cmd(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, force: bool, fallback: bool, as_json: bool) -> None:
    """Run every stage: export -> annotate -> transform -> calibrate -> build -> validate.

    Exits 0 when every gate passes, 1 when a gate fails, 6 when gates are pending on the device
    (see README for other codes). With --json: one JSON object on stdout (verdict, gates, metrics).
    """
    with machine_output(as_json) as emit:
        ctx = make_context(recipe, model, out, build_dir)
        echo(f"edgecompile build: recipe {ctx.recipe.name} -> target {ctx.target.name} ({ctx.target.backend}); model {ctx.model_ref}; into {ctx.build_dir}")
        if fallback or ctx.recipe.fallback.enabled:
            if force:
                raise click.UsageError("--force cannot be combined with the precision fallback (each step reuses what did not change)")
            code, extra = _fallback(ctx)
        else:
            _run(ctx, "validate", frozenset(STAGE_ORDER) if force else frozenset())
            extra = None
        report, verdict_code = _verdict(ctx)
        if extra is None:
            code = verdict_code
        if as_json:
            payload = verdict_json("build", ctx, report, code)
            if extra is not None:
                payload["fallback"] = extra
            emit(payload)
    sys.exit(code)


def _fallback(ctx: BuildContext) -> tuple[int, dict[str, Any]]:
    """Run the precision fallback search (edgecompile.search.fallback); print one line per step."""
    from edgecompile.search.fallback import fallback_search

    def on_step(step: Any) -> None:
        if not quiet():
            echo("fallback step " + " | ".join(step.row()))

    result = fallback_search(ctx, on_step=on_step)
    echo(f"fallback: {result.status} | {result.reason} | final plan as rules: {ctx.build_dir / 'fallback' / 'rules.yaml'}")
    return result.exit_code, result.to_json()


def _stage_command(stage: str, help_text: str) -> click.Command:
    @click.command(stage, help=help_text)
    @context_options
    @click.option("--force", is_flag=True, help=f"Redo '{stage}' even if its inputs did not change.")
    @json_option
    @handle_errors
    def command(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, force: bool, as_json: bool) -> None:
        with machine_output(as_json) as emit:
            ctx = make_context(recipe, model, out, build_dir)
            results = _run(ctx, stage, frozenset({stage}) if force else frozenset())
            echo(f"{stage}: done | {ctx.path(stage)}")
            if as_json:
                emit({"ok": True, "command": stage, "build_dir": str(ctx.build_dir), "output": str(ctx.path(stage)), "stages": [{"stage": r.stage, "skipped": r.skipped, "wall_s": r.wall_s} for r in results]})

    return command


export_cmd = _stage_command("export", "Export each component of the model to ONNX (with a parity check against torch).")
transform_cmd = _stage_command("transform", "Run the recipe's weight transforms (e.g. GPTQ) on the float graphs; a no-op without any.")
calibrate_cmd = _stage_command("calibrate", "Measure activation ranges on the recipe's calibration set (streamed; saved for reuse).")


@click.command("annotate")
@context_options
@click.option("--force", is_flag=True, help="Redo 'annotate' even if its inputs did not change.")
@click.option("--show", is_flag=True, help="Print node -> role -> precision -> rule, and a summary by component.")
@click.option("--all-nodes", is_flag=True, help="With --show: list nodes without weights too.")
@handle_errors
def annotate_cmd(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, force: bool, show: bool, all_nodes: bool) -> None:
    """Build the precision plan from the recipe's rules (first match wins)."""
    ctx = make_context(recipe, model, out, build_dir)
    results = _run(ctx, "annotate", frozenset({"annotate"}) if force else frozenset())
    if show:
        plan = results[-1].output.plan()
        click.echo(f"{'component':<15} {'node':<28} {'module':<44} {'op':<10} {'role':<13} {'precision':<9} rule")
        for e in plan.entries:
            if e.weight is not None or all_nodes:
                click.echo(f"{e.component:<15} {e.node[:28]:<28} {e.module[-44:]:<44} {e.op_type:<10} {e.role:<13} {e.precision:<9} {e.rule}")
        click.echo("summary (weight-carrying nodes):")
        for component, counts in plan.summary().items():
            click.echo(f"  {component}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        sys.stdout.flush()
    echo(f"annotate: done | {ctx.path('annotate', 'plan.json')}")


@click.command("validate")
@context_options
@json_option
@handle_errors
def validate_cmd(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, as_json: bool) -> None:
    """(Re-)validate the artifact against the float reference and the gates; always re-measures.

    Exit codes as for 'build'. With --json: one JSON object on stdout.
    """
    with machine_output(as_json) as emit:
        ctx = make_context(recipe, model, out, build_dir)
        _run(ctx, "validate", frozenset({"validate"}))
        report, code = _verdict(ctx)
        if as_json:
            emit(verdict_json("validate", ctx, report, code))
    sys.exit(code)
