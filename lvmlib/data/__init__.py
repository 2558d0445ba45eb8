"""Data pipeline: corpus -> concepts -> vectors -> bank -> ctx-5 sequences."""
from .bank import (CONTEXT, SPLITS, Bank, BankError, Sequences, assign_splits, fingerprint, neighbours,
                   random_rotation, sequences, synthetic_bank, train_subset)

__all__ = ["CONTEXT", "SPLITS", "Bank", "BankError", "Sequences", "assign_splits", "fingerprint", "neighbours",
           "random_rotation", "sequences", "synthetic_bank", "train_subset"]
