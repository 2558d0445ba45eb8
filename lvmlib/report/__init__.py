"""Notebooks as versioned HTML reports: ``lvm report NOTEBOOK --params FILE`` (runner) and the index
of every run, ``outputs/index.html`` (index). Notebooks call :func:`save_metrics` and
:func:`save_artifact`; importing them costs nothing (papermill/nbconvert load lazily)."""
from .index import build_index, collect_runs, index_page
from .runner import (DEFAULT_KERNEL, KERNEL_ENV, REPORT_DIR_ENV, RUN_FILES, ReportError, ReportFailed,
                     ensure_kernel, environment_facts, git_state, load_params, params_hash, portable,
                     render_html, resolve_params, run_report, save_artifact, save_metrics)
