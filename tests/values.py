"""Per-row values with known means for the findings tests: runs.Results.values as the notebooks pass them."""
import numpy as np

from lvmlib.evaluation import PerRow
from lvmlib.evaluation.fivecat import OFFSETS, margin_of

ROWS, ARTICLES = 400, 40


def per_row_values(means: dict, noise: float = 0.01, seed: int = 0) -> dict:
    """{label: {metric: PerRow}} whose every metric averages exactly means[label][metric]: the rows share a
    difficulty (so paired differences are tight) and each run adds its own noise of sd `noise`; a "*margin" metric
    is 7 offset columns whose margin_of is that mean."""
    rng = np.random.default_rng(seed)
    articles = np.repeat(np.arange(ARTICLES), ROWS // ARTICLES)

    def centred(sd):
        x = rng.normal(0, sd, ROWS)
        return x - x.mean()
    difficulty = centred(0.1)
    out = {}
    for label, metrics in means.items():
        out[label] = {}
        for metric, mean in metrics.items():
            if metric.endswith("margin"):
                cols = np.stack([0.3 + difficulty + centred(noise) for _ in OFFSETS], axis=1)
                cols[:, OFFSETS.index(0)] += mean
                out[label][metric] = PerRow(cols, articles, margin_of)
            else:
                out[label][metric] = PerRow(mean + difficulty + centred(noise), articles)
    return out
