"""Training: `train(spec)` (data, model, fit, out/), `fit` on in-memory sequences, verified checkpoints."""
from .checkpoint import CheckpointError, fingerprint_of, load_checkpoint, save_checkpoint
from .loop import CONVERGED, FitResult, dist_info, fit, pick_device, seed_everything, train, validate
