"""Checking a command line before it runs: what planners call to validate a job's options up front.

An experiment's or sweep's job runs ``main/<script>.py ARGV`` hours later on a
cluster. :func:`parse_strictly` parses that ARGV now, with the script's own
parser, so a bad value fails ``run --dry-run`` instead of the job; and it
takes every option as spelled out (argparse would let ``--epoch`` stand for
``--epochs``, or ``--result`` for ``--results``), naming the close matches.
"""

from __future__ import annotations

import argparse
import difflib

__all__ = ["check_one_line", "parse_strictly", "script_parser"]


def script_parser(prog: str, description: str, doc: str) -> argparse.ArgumentParser:
    """A script's parser: ``description`` on top, and below the options the examples that end
    the script's docstring ``doc`` (what follows ``Examples:``), kept as written.
    """
    return argparse.ArgumentParser(prog=prog, description=description, epilog=doc.split("Examples:")[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def parse_strictly(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by ``parser`` without abbreviations; an error is a ValueError naming the script.

    Raises:
        ValueError: argparse's message (an unknown option lists the script's close matches).
    """
    known = sorted(o for o in parser._option_string_actions if o.startswith("--"))

    def refuse(message: str):  # argparse would print the usage and exit
        hints = []
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], known, n=2, cutoff=0.8)
                if word.startswith("--") and close:
                    hints.append(f"{word}: did you mean {' or '.join(close)}?")
        raise ValueError(f"{parser.prog}: {message}" + (f" ({'; '.join(hints)})" if hints else ""))

    parser.allow_abbrev = False
    parser.error = refuse
    return parser.parse_args(argv)


def check_one_line(value: str, what: str) -> str:
    """Refuse newlines and NULs (they would start a new line in any script or job file); returns ``value``."""
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"{what} must be one line without control characters, received {value!r}")
    return value
