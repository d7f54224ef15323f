"""``atcon token new NAME ROLE``: a fresh API token and its ``ATCON_API_TOKENS`` entry.

The token is printed once; only its SHA-256 goes into the settings. Append the entry
to ``ATCON_API_TOKENS`` (comma-separated) and restart the API.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="create a token", description=__doc__.splitlines()[0])
    new.add_argument("name", help="who holds it (logged in the audit log)")
    new.add_argument("role", choices=("viewer", "operator", "admin"))


def run(args: argparse.Namespace) -> int:
    import logging

    from service.core.security import new_token
    from worker import SettingsError
    from worker.settings import Role, parse_tokens

    token, entry = new_token(args.name, Role(args.role))
    try:
        parse_tokens(str(entry))  # the name must be valid in an entry
    except SettingsError:
        logging.getLogger(__name__).error("NAME must be 1-64 letters, digits, '_', '.' or '-'")
        return 2
    result = {"token": token, "entry": str(entry), "add_to": "ATCON_API_TOKENS"}
    print(json.dumps(result, indent=2))  # noqa: T201 - the command's output
    return 0
