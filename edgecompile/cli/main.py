"""``edgecompile``: the command group."""

from __future__ import annotations

import click

from edgecompile import __version__
from edgecompile.cli.device_cmd import device_group
from edgecompile.cli.init_cmd import init_cmd
from edgecompile.cli.listing_cmds import backends_cmd, recipes_cmd, targets_cmd
from edgecompile.cli.pipeline_cmds import annotate_cmd, build_cmd, calibrate_cmd, export_cmd, transform_cmd, validate_cmd
from edgecompile.cli.report_cmd import report_cmd
from edgecompile.cli.robustness_cmd import robustness_cmd
from edgecompile.cli.sweep_cmd import sweep_cmd
from edgecompile.cli.run_cmd import run_cmd
from edgecompile.cli_zoo import zoo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="edgecompile")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug, and third-party logs).")
@click.option("-q", "--quiet", is_flag=True, help="Only results and errors: no progress, no stage lines.")
def main(verbose: int, quiet: bool) -> None:
    """Compile vision-language models for edge devices, and prove the result still works.

    Exit codes: 0 passed, 1 a gate failed, 2 usage error, 3 bad input (recipe, target, model,
    data), 4 backend unavailable, 5 a stage failed, 6 pending (no gate failed; some can only
    be measured on the device), 70 internal error.
    """
    from edgecompile import progress

    progress.configure(-1 if quiet else verbose)


for command in (init_cmd, build_cmd, export_cmd, annotate_cmd, transform_cmd, calibrate_cmd, validate_cmd, run_cmd, targets_cmd, recipes_cmd, backends_cmd, robustness_cmd, sweep_cmd, report_cmd):
    main.add_command(command)

main.add_command(zoo)
main.add_command(device_group)


if __name__ == "__main__":  # python -m edgecompile.cli.main
    main()
