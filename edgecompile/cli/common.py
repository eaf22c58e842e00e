"""Shared CLI plumbing: recipe lookup, build-context options, error rendering, the verdict line."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgecompile.errors import EdgecompileError, ExitCode
from edgecompile.reports.format import number
from edgecompile.stages.base import StageResult
from edgecompile.stages.context import BuildContext
from edgecompile.config.resolve import resolve


def recipe_path(value: str) -> Path:
    """A recipe file path, or a recipe name (looked up as config.resolve documents)."""
    return resolve("recipe", value)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors: one line, their own exit code. Internal bugs: the traceback, exit 70."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgecompileError as exc:
            click.echo(f"error: {exc}", err=True)
            click.echo(f"FAILED | {type(exc).__name__} | exit {exc.exit_code}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("FAILED | interrupted (no partial output was kept)", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader stopped early (`edgecompile recipes | head`): not an error of ours
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception:  # noqa: BLE001 - an internal bug: keep its traceback
            traceback.print_exc()
            click.echo(f"FAILED | internal error | exit {ExitCode.INTERNAL}", err=True)
            sys.exit(ExitCode.INTERNAL)

    return wrapper


def context_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--recipe/--model/--out to start a build directory, or --build to reuse one."""
    fn = click.option("-b", "--build", "build_dir", type=click.Path(path_type=Path, file_okay=False), help="Existing build directory to work on.")(fn)
    fn = click.option("-o", "--output", "--out", "out", type=click.Path(path_type=Path, file_okay=False), help="Build directory (default: build/<recipe name>).")(fn)
    fn = click.option("-m", "--model", help="HF model directory, bundled model name, or a name in the local HF cache.")(fn)
    fn = click.option("-r", "--recipe", help="Recipe YAML file, or a recipe name in recipes/.")(fn)
    return fn


def make_context(recipe: str | None, model: str | None, out: Path | None, build_dir: Path | None) -> BuildContext:
    """The command's build context; its directory's lock is held until the command ends."""
    if build_dir is not None:
        if recipe or model or out:
            raise click.UsageError("--build cannot be combined with --recipe, --model or --out")
        ctx = BuildContext.open(build_dir)
    elif recipe is None:
        raise click.UsageError("give --recipe (to start a build) or --build (to reuse one)")
    else:
        ctx = BuildContext.create(recipe_path(recipe), model, out)
    current = click.get_current_context(silent=True)
    if current is not None:
        current.call_on_close(ctx.close)
    return ctx


def echo_stage(result: StageResult) -> None:
    if result.skipped:
        click.echo(f"  {result.stage:<9} skipped (inputs unchanged)")
    else:
        click.echo(f"  {result.stage:<9} done in {result.wall_s:.1f}s")


def _status(gate: dict[str, Any]) -> str:
    return gate.get("status") or ("passed" if gate["passed"] else "failed")


def verdict_line(report: dict[str, Any], report_path: Path) -> int:
    """Print the single verdict line; return the exit code it means (0 pass, 1 fail, 6 pending)."""
    gates = report["gates"]
    failed = [g for g in gates if _status(g) == "failed"]
    pending = [g for g in gates if _status(g) == "pending"]
    marks = {"passed": "ok  ", "failed": "FAIL", "pending": "WAIT"}
    for g in gates:
        value = "n/a" if g["value"] is None else number(g["value"])  # 0.99996 must not print as "1"
        click.echo(f"  [{marks[_status(g)]}] {g['name']}: {g['metric']} = {value} {g['op']} {number(g['threshold'])}{'  (' + g['reason'] + ')' if g.get('reason') else ''}")
    where = report["where"]["description"]
    passed = len(gates) - len(failed) - len(pending)
    if failed:
        names = ", ".join(g["name"] for g in failed)
        more = f", {len(pending)} pending on device" if pending else ""
        click.echo(f"FAILED | {report['recipe']} | {len(failed)} of {len(gates)} gates failed: {names}{more} | {where} | {report_path}")
        return ExitCode.GATE_FAILED
    if pending:
        names = ", ".join(g["name"] for g in pending)
        click.echo(f"PENDING | {report['recipe']} | {passed} passed, {len(pending)} pending on device: {names} | {where} | {report_path}")
        return ExitCode.PENDING
    click.echo(f"PASSED | {report['recipe']} | {len(gates)} of {len(gates)} gates passed | {where} | {report_path}")
    return ExitCode.PASSED
