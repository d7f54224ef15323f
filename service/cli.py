"""The ``atcon`` command line.

Each sub-command lives in its own module, which defines ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``atcon --help`` stays fast and a command's heavy imports cost nothing elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("service.commands.demo", "run the main job end to end on generated data"),
    "serve": ("service.commands.serve", "run the HTTP API (and, without Redis, its workers)"),
    "worker": ("service.commands.worker", "consume a job queue (detect or finetune)"),
    "token": ("service.commands.token", "create API tokens"),
    "detect": ("service.commands.detect", "find the events in a video, with attention maps"),
    "synth": ("service.commands.synth", "write synthetic ward videos with ground truth"),
    "train": ("service.commands.train", "train a frame classifier (optionally with ATCON)"),
    "finetune": ("service.commands.finetune", "ATCON fine-tune a checkpoint on unlabeled frames"),
    "evaluate": ("service.commands.evaluate", "score a checkpoint on labeled frames (and boxes)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atcon", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from service.core.token_hygiene import install_log_redaction

    install_log_redaction()
    return int(args._module.run(args))


if __name__ == "__main__":
    sys.exit(main())
