"""The one quoting rule of the cluster layer.

Every value that comes from a user (profile, experiment file, command line)
and reaches a shell goes through :func:`quote` (``shlex.quote``: the value
becomes one inert word), whether it lands in a job file or in a printed
command. Values that cannot be quoted (``#SBATCH`` lines are not parsed by a
shell, and a newline ends them) are checked by :func:`check_directive`
instead. Names (experiments, sweeps, jobs) are checked by the suite's one
rule, :func:`utils.core.ids.safe_name`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

__all__ = [
    "DIRECTIVE_CHARS",
    "check_directive",
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


def check_directive(value: str, what: str) -> str:
    """An ``#SBATCH`` value: only :data:`DIRECTIVE_CHARS`; returns ``value``."""
    if not _DIRECTIVE_VALUE.fullmatch(value):
        raise ValueError(f"{what} may hold only {DIRECTIVE_CHARS}, received {value!r}; fix it where it is set")
    return value
