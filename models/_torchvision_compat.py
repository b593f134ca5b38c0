"""Import torchvision even when its compiled ops do not match the installed torch.

Why: the PyPI wheel of torchvision 0.28.0 is a CUDA build. Next to the CPU
torch of a workstation its C++ library (``torchvision/_C.so``) fails to load,
which torchvision tolerates, but ``torchvision/_meta_registrations.py`` then
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``
unconditionally and the import dies with "operator torchvision::nms does not
exist". pytorchvideo's model code imports torchvision too (``RoIAlign`` in
``pytorchvideo/models/head.py``), so X3D is hit as well.

Fix, applied only when needed: if the library does not load, declare the two
op *schemas* (no kernels) before importing torchvision. The models we use
(S3D, X3D) never call those ops; calling one raises "no kernel" as it would
anyway. Where torch and torchvision match (a GPU cluster) the library loads,
nothing is declared, and the import is the stock one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["import_torchvision"]

# Kept alive for the process: a torch.library.Library drops its definitions
# when garbage-collected.
_SHIM = None

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _ops_library_loads() -> bool:
    """True when torchvision's compiled ops are (or can be) registered with this torch."""
    import torch

    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: let the real import raise its own error
    libs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C.*"))
    for lib in libs:
        try:
            # The same call torchvision makes; loading twice is a no-op.
            torch.ops.load_library(str(lib))
            return True
        except OSError:
            continue
    return False


def import_torchvision():
    """``import torchvision``, declaring the missing op schemas first when they are missing."""
    global _SHIM
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if _SHIM is None and not _ops_library_loads():
        import torch

        _SHIM = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _SHIM.define(schema)
    import torchvision

    return torchvision
