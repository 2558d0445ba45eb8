"""Notebooks as versioned HTML reports (runner: ``lvm report``) and ``outputs/index.html`` (index); notebooks
call :func:`save_metrics` and :func:`save_artifact` (cheap to import: papermill/nbconvert load lazily)."""
from .index import build_index, collect_runs, index_page, newest_metrics
from .runner import (DEFAULT_KERNEL, KERNEL_ENV, REPORT_DIR_ENV, RUN_FILES, ReportError, ReportFailed,
                     ensure_kernel, environment_facts, git_state, load_params, params_hash, portable,
                     render_html, resolve_params, run_report, save_artifact, save_metrics)
