"""Evaluation of a next-concept predictor: cosine with CIs and baselines (core), 5CAT (fivecat), Meta-LCM
metrics (lcm), FAISS decoding (retrieval), the ceiling (ceiling), all in one document (document.evaluate); every
interval and paired comparison comes from one bootstrap over articles and seeds (uncertainty)."""
from .core import (BATCH, EvalError, LinearBaseline, Predict, compare_to_baselines, copy_last,
                   fit_baselines, fit_position_weighted, fit_residual_ridge, global_mean, linear_average,
                   mean_cosine, predict_all, predictor, row_cosine, split_rows, train_target_mean)
from .document import SCHEMA, bank_fingerprint, evaluate, format_table, per_row
from .fivecat import ablations, coherence_bins, five_cat, in_article_rank, offset_sweep, rollout
from .lcm import lcm_metrics
from .retrieval import ConceptIndex, NearestContextPredictor, brute_force_topk
from .uncertainty import INTERVAL, PerRow, compare, holm, interval, sign
