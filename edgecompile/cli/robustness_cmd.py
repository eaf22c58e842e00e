"""``edgecompile robustness --build DIR``: accuracy under the seed-002 corruptions, RS and mCE."""

from __future__ import annotations

from pathlib import Path

import click

from edgecompile.cli.common import handle_errors
from edgecompile.cli.output import echo, json_option, machine_output
from edgecompile.robustness.corruptions import CORRUPTIONS, SEVERITIES


@click.command("robustness")
@click.option("-b", "--build", "build_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True), help="Built directory (after 'edgecompile build').")
@click.option("--corruption", "corruptions", multiple=True, type=click.Choice(CORRUPTIONS), help="Corruption(s) to apply (repeatable; default: all ten).")
@click.option("--severity", "severities", multiple=True, type=click.IntRange(1, 5), help="Severity(ies) 1-5 (repeatable; default: all five).")
@click.option("--samples", type=click.IntRange(1), default=None, help="Use only the first N eval samples (default: the recipe's eval.samples).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corruptions' random state.")
@json_option
@handle_errors
def robustness_cmd(build_dir: Path, corruptions: tuple[str, ...], severities: tuple[int, ...], samples: int | None, seed: int, as_json: bool) -> None:
    """Clean and corrupted accuracy of the artifact and the FP32 reference; RS and mCE per seed 002.

    The corruptions are this project's implementation of ImageNet-C's; the numbers compare builds
    with each other and with the float reference, not with published ImageNet-C results.
    """
    from edgecompile import progress
    from edgecompile.reports.build_report import refresh_build_reports
    from edgecompile.robustness.build import robustness_path, run_robustness
    from edgecompile.stages.context import BuildContext

    with machine_output(as_json) as emit:
        ctx = BuildContext.open(build_dir)
        corr = corruptions or CORRUPTIONS
        sev = tuple(sorted(set(severities))) or SEVERITIES
        with progress.task("robustness: corruption x severity", total=len(corr) * len(sev)) as bar:

            def on_pair(name: str, severity: int, acc: dict[str, float]) -> None:
                bar.advance()
                if progress.verbosity() >= 1 or progress.mode() == "plain":
                    echo(f"  {name:<17} s{severity}: " + "  ".join(f"{who} {v:.3f}" for who, v in acc.items()))

            result = run_robustness(ctx, tuple(corr), sev, samples, seed, progress=on_pair)
        for who in ("reference", "artifact"):
            r = result[who]
            echo(f"{who:<9} clean {r['clean']:.3f}  RS {r['rs'] if r['rs'] is None else format(r['rs'], '.3f')}  mCE {r['mce']:.3f}")
        paths = refresh_build_reports(ctx.build_dir)
        if as_json:
            emit({"ok": True, "command": "robustness", "build_dir": str(ctx.build_dir), "result": str(robustness_path(ctx.build_dir)), "html": str(paths["html"]), **result})
            return
        click.echo(f"robustness: done | {robustness_path(ctx.build_dir)}")
