"""The one quoting rule of the cluster layer, and the names that may become files and job names.

Every value that comes from a user (profile, experiment file, command line)
and reaches a shell goes through :func:`quote` (``shlex.quote``: the value
becomes one inert word), whether it lands in a job file rendered here, in a
submitit job's setup lines or in a printed command. Values that cannot be
quoted (``#SBATCH`` lines are not parsed by a shell, and a newline ends them)
are checked by :func:`check_directive` instead.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

__all__ = [
    "DIRECTIVE_CHARS",
    "check_directive",
    "check_name",
    "check_one_line",
    "command_line",
    "export_line",
    "module_load_line",
    "quote",
]

# Characters an #SBATCH value may hold. sbatch splits directive lines on blanks,
# and anything shell-like ($, quotes, ;, `, #, \, newlines) has no business there.
DIRECTIVE_CHARS = "letters, digits and _.,:@%+=/*&|![]-"
_DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/*&|!\[\]-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A name that becomes a folder, a log file and part of a job name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def quote(value) -> str:
    """One shell word holding ``str(value)`` verbatim (``shlex.quote``)."""
    return shlex.quote(str(value))


def command_line(argv: Iterable) -> str:
    """A command as one line a shell reads back as ``argv`` (every word quoted)."""
    return " ".join(quote(a) for a in argv)


def export_line(name: str, value) -> str:
    """``export NAME='value'``; the name must be a shell variable name."""
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"environment variable names look like NCCL_DEBUG, received {name!r}")
    return f"export {name}={quote(value)}"


def module_load_line(module: str) -> str:
    """``module load 'name'``: a module name is one word, whatever it holds."""
    return f"module load {quote(module)}"


def check_one_line(value: str, what: str) -> str:
    """Refuse newlines and NULs (they would start a new line in any script); returns ``value``."""
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"{what} must be one line without control characters, received {value!r}")
    return value


def check_directive(value: str, what: str) -> str:
    """An ``#SBATCH`` value: only :data:`DIRECTIVE_CHARS`; returns ``value``."""
    if not _DIRECTIVE_VALUE.fullmatch(value):
        raise ValueError(f"{what} may hold only {DIRECTIVE_CHARS}, received {value!r}; fix it where it is set")
    return value


def check_name(value: str, what: str) -> str:
    """A sweep or experiment name: it names a folder, log files and jobs; returns ``value``.

    Raises:
        ValueError: anything but 1-64 letters, digits and ``_.-`` starting with a
            letter or digit (so no ``/``, ``..``, blanks or newlines).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} expected 1-64 letters, digits and _.- (starting with a letter or digit, no '..'), "
            f"received {value!r}; pick a plain name such as wlasl100"
        )
    return value
