"""The `codex-limits` command: serve, schema, and the operator commands built on the client."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2


def _serve(args: argparse.Namespace) -> int:
    from .config import Settings
    from .server import run, setup_logging

    setup_logging(args.log_level)
    run(Settings.from_env(), simulate=args.simulate)
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from protocol import schema

    out = Path(args.out)
    if args.check:
        drift = schema.check(out)
        if drift:
            print(f"schemas in {out} are out of date: {', '.join(drift)}", file=sys.stderr)
            print(f"run: codex-limits schema --out {out}", file=sys.stderr)
            return 1
        print(f"schemas in {out} are up to date")
        return EXIT_OK
    written = schema.write(out)
    print(f"wrote {len(written)} schema files to {out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-limits", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the app-server on stdin/stdout (JSON-RPC, one message per line)")
    serve.add_argument("--log-level", default=None, help="stderr log level (default WARNING, or $CODEX_LIMITS_LOG)")
    serve.add_argument(
        "--simulate", action="store_true", help="serve a simulated upstream with three accounts (no account needed)"
    )
    serve.set_defaults(run=_serve)

    schema = sub.add_parser("schema", help="export the JSON Schemas (upstream layout)")
    schema.add_argument("--out", required=True, help="directory to write, or to compare with --check")
    schema.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ from the models")
    schema.set_defaults(run=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.run(args))
