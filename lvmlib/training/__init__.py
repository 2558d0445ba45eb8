"""Training: `train(spec)` (data, model, fit, out/), `fit` on in-memory sequences, verified checkpoints."""
from .checkpoint import CheckpointError, fingerprint_of, load_checkpoint, save_checkpoint
from .loop import CONVERGED, FitResult, dist_info, fit, pick_device, seed_everything, train, validate

__all__ = ["CONVERGED", "CheckpointError", "FitResult", "dist_info", "fingerprint_of", "fit", "load_checkpoint",
           "pick_device", "save_checkpoint", "seed_everything", "train", "validate"]
