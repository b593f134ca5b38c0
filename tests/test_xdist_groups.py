"""Every test file on the local SLURM cluster (the ``slurm`` mark) is in the group that one xdist worker runs.

At run time the ``cluster`` fixture also refuses a second worker (tests/test_slurm_cluster.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SLURM_FILES

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_on_the_cluster_is_scheduled_together():
    users = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"^(pytestmark = .*mark\.slurm|\s*@pytest\.mark\.slurm)", p.read_text(), re.MULTILINE)
    )
    assert users == sorted(SLURM_FILES), "add the file to SLURM_FILES in tests/conftest.py"
