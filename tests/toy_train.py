"""``main/train_<family>.py`` for the tests' tiny PyTorch family: registers it, then runs the shared CLI.

Subprocess tests of the engine's signal handling and DDP use it: the rules
under test do not depend on the network, and a real X3D costs seconds per
step on a CPU.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.torch_helpers import toy_family  # noqa: E402
from utils.train_cli import main  # noqa: E402

if __name__ == "__main__":
    with toy_family():
        sys.exit(main("toy", sys.argv[1:]))
