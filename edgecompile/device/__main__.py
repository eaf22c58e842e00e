"""``python -m edgecompile.device validate --build DIR``: finish a build's validation on the device.

argparse, not click: the device needs nothing but numpy and its runtime. Exit codes are the CLI's
(edgecompile/errors.py): 0 passed, 1 a gate failed, 3 bad pack, 4 runtime unavailable, 6 pending.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgecompile.errors import ExitCode


def verdict_line(report: dict[str, Any], path: Path) -> int:
    """The gates, then one verdict line naming where each was measured; returns the exit code."""
    marks = {"passed": "ok  ", "failed": "FAIL", "pending": "WAIT"}
    for g in report["gates"]:
        value = "n/a" if g["value"] is None else f"{g['value']:.4g}"
        reason = f"  ({g['reason']})" if g.get("reason") else ""
        print(f"  [{marks[g['status']]}] {g['name']}: {g['metric']} = {value} {g['op']} {g['threshold']:.4g} [{g.get('measured_on', 'host')}]{reason}")
    failed = [g["name"] for g in report["gates"] if g["status"] == "failed"]
    pending = [g["name"] for g in report["gates"] if g["status"] == "pending"]
    where = report["where"]["description"]
    n = len(report["gates"])
    if failed:
        print(f"FAILED | {report['target']} | {len(failed)} of {n} gates failed: {', '.join(failed)} | {where} | {path}")
        return ExitCode.GATE_FAILED
    if pending:
        print(f"PENDING | {report['target']} | {n - len(pending)} passed, {len(pending)} pending on device: {', '.join(pending)} | {where} | {path}")
        return ExitCode.PENDING
    print(f"PASSED | {report['target']} | {n} of {n} gates passed | {where} | {path}")
    return ExitCode.PASSED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecompile.device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="run the device pack on this machine's runtime and complete the gates")
    v.add_argument("--build", required=True, type=Path, help="the build directory (copied from the host)")
    p = sub.add_parser("probe", help="(internal) latency and memory of one component, as one JSON line")
    p.add_argument("--build", required=True, type=Path)
    p.add_argument("--component", required=True)
    c = sub.add_parser("compare", help="repeat validate's Polygraphy comparison of one component (needs polygraphy)")
    c.add_argument("--build", required=True, type=Path)
    c.add_argument("--component", required=True)
    args = parser.parse_args(argv)

    from edgecompile.device.pack import PackError
    from edgecompile.device.runtimes import RuntimeUnavailable

    try:
        if args.command == "probe":
            from edgecompile.device.probe import measure

            print(json.dumps(measure(args.build, args.component)))
            return 0
        if args.command == "compare":
            from edgecompile.device.compare import compare

            ok, summary = compare(args.build, args.component)
            for name, row in summary.items():
                print(f"  {args.component}/{name}: cosine min {row['cosine_min']:.6f} (>= {row['min_cosine']}), {row['error_stat']} abs error {row[row['error_stat'] + '_absdiff']:.4g} (atol {row['atol']}), rel {row[row['error_stat'] + '_reldiff']:.4g} (rtol {row['rtol']})")
            print(f"{'PASSED' if ok else 'FAILED'} | compare {args.component} | {args.build}")
            return ExitCode.PASSED if ok else ExitCode.GATE_FAILED
        from edgecompile.device.validate import validate_on_device

        report = validate_on_device(args.build)
    except PackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BACKEND_UNAVAILABLE
    return verdict_line(report, args.build / "report.json")


if __name__ == "__main__":
    raise SystemExit(main())
