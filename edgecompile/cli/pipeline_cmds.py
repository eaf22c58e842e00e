"""build / export / annotate / calibrate / validate: run the pipeline up to a stage."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgecompile.cli.common import context_options, echo_stage, handle_errors, make_context, verdict_line
from edgecompile.stages import STAGE_ORDER
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import run_until
from edgecompile.stages.validate import publish_report


def _finish(ctx: BuildContext) -> None:
    report = publish_report(ctx)
    sys.exit(verdict_line(report, ctx.path("report.json")))


@click.command("build")
@context_options
@click.option("--force", is_flag=True, help="Redo every stage even if its inputs did not change.")
@handle_errors
def build_cmd(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, force: bool) -> None:
    """Run every stage: export -> annotate -> transform -> calibrate -> build -> validate.

    Exits 0 when every gate passes, 1 when a gate fails (see README for other codes).
    """
    ctx = make_context(recipe, model, out, build_dir)
    click.echo(f"edgecompile build: recipe {ctx.recipe.name} -> target {ctx.target.name} ({ctx.target.backend}); model {ctx.model_ref}; into {ctx.build_dir}")
    force_set = frozenset(STAGE_ORDER) if force else frozenset()
    run_until(ctx, "validate", force=force_set, on_result=echo_stage)
    _finish(ctx)


def _stage_command(stage: str, help_text: str) -> click.Command:
    @click.command(stage, help=help_text)
    @context_options
    @click.option("--force", is_flag=True, help=f"Redo '{stage}' even if its inputs did not change.")
    @handle_errors
    def command(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None, force: bool) -> None:
        ctx = make_context(recipe, model, out, build_dir)
        run_until(ctx, stage, force=frozenset({stage}) if force else frozenset(), on_result=echo_stage)
        click.echo(f"{stage}: done | {ctx.path(stage)}")

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
    results = run_until(ctx, "annotate", force=frozenset({"annotate"}) if force else frozenset(), on_result=echo_stage)
    if show:
        plan = results[-1].output.plan()
        click.echo(f"{'component':<15} {'node':<28} {'op':<10} {'role':<13} {'precision':<9} rule")
        for e in plan.entries:
            if e.weight is not None or all_nodes:
                click.echo(f"{e.component:<15} {e.node[:28]:<28} {e.op_type:<10} {e.role:<13} {e.precision:<9} {e.rule}")
        click.echo("summary (weight-carrying nodes):")
        for component, counts in plan.summary().items():
            click.echo(f"  {component}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    click.echo(f"annotate: done | {ctx.path('annotate', 'plan.json')}")


@click.command("validate")
@context_options
@handle_errors
def validate_cmd(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None) -> None:
    """(Re-)validate the artifact against the float reference and the gates; always re-measures."""
    ctx = make_context(recipe, model, out, build_dir)
    run_until(ctx, "validate", force=frozenset({"validate"}), on_result=echo_stage)
    _finish(ctx)
