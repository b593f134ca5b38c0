"""Model families and the registry.

Importing this package registers every family (each imports its framework
lazily, so this stays cheap). Look models up with ``get_model(name)``.
"""

from models import cnn2d, i3d, movinet, pose, s3d, videomae, vivit, vjepa2, x3d  # noqa: F401  (each registers its variants)
from models.registry import ModelSpec, get_model, list_models, register_model

__all__ = ["ModelSpec", "get_model", "list_models", "register_model"]
