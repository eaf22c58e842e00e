"""init: write an editable recipe and its target into the current project, from the shipped ones."""

from __future__ import annotations

from pathlib import Path

import click

from edgecompile.cli.common import handle_errors
from edgecompile.config.resolve import known
from edgecompile.errors import InputError


@click.command("init")
@click.option("-t", "--target", "target_name", default="x86-cpu", show_default=True, help="A known target (see 'edgecompile targets').")
@click.option("-n", "--name", help="Name of the new recipe (default: the target's name).")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True, help="Project directory.")
@handle_errors
def init_cmd(target_name: str, name: str | None, directory: Path) -> None:
    """Write recipes/<name>.yaml and targets/<target>.yaml into the project, ready to edit.

    The recipe starts as the shipped recipe for that target (or x86-cpu's); edgecompile finds both
    by name from this directory ('edgecompile build --recipe <name>'). Existing files are never overwritten.
    """
    targets, recipes = known("target"), known("recipe")
    if target_name not in targets:
        raise InputError(f"--target: unknown target '{target_name}'; expected one of {', '.join(sorted(targets))}")
    name = name or target_name
    source = recipes.get(target_name) or recipes["x86-cpu"]
    recipe_out = directory / "recipes" / f"{name}.yaml"
    target_out = directory / "targets" / f"{target_name}.yaml"
    for path in (recipe_out, target_out):
        if path.exists():
            raise InputError(f"{path}: already exists; edgecompile init never overwrites a file")
    text = source.read_text()
    lines = [f"name: {name}" if line.startswith("name:") else (f"target: {target_name}" if line.startswith("target:") else line) for line in text.splitlines()]
    recipe_out.parent.mkdir(parents=True, exist_ok=True)
    target_out.parent.mkdir(parents=True, exist_ok=True)
    target_out.write_text(targets[target_name].read_text())
    recipe_out.write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {recipe_out} (from {source.name}) and {target_out}; build with: edgecompile build --recipe {name}")
