# shellcheck shell=bash disable=SC2034  # RESULTS_ARG is used by the scripts sourcing this
# Shared by the sbatch/*.sbatch scripts (sourced, not run): where to run, which python, and a
# log header with the job, node, commit and GPUs.
#
# Environment (sbatch exports the submitting shell's environment to the job by default):
#   HARNESS_REPO     the checkout to run (default: the directory sbatch was called from)
#   HARNESS_PYTHON   python with the harness installed (default: the active virtualenv's,
#                    else $HARNESS_REPO/.venv/bin/python, else python3)
#   HARNESS_RESULTS  shared results directory (default: $HARNESS_REPO/results); when set it is
#                    passed as paths.results=... before your own overrides
set -euo pipefail

REPO="$(cd "${HARNESS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}" && pwd)"
if [[ -n "${HARNESS_PYTHON:-}" ]]; then
    PY="$HARNESS_PYTHON"
elif [[ -z "${VIRTUAL_ENV:-}" && -x "$REPO/.venv/bin/python" ]]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi
RESULTS="$(mkdir -p "${HARNESS_RESULTS:-$REPO/results}" && cd "${HARNESS_RESULTS:-$REPO/results}" && pwd)"
RESULTS_ARG=()
if [[ -n "${HARNESS_RESULTS:-}" ]]; then
    RESULTS_ARG=("paths.results=$RESULTS")
fi
JOB="${SLURM_JOB_ID:-local-$$}"
export PYTHONUNBUFFERED=1

pick_results() { # pick_results OVERRIDES...: RESULTS follows a paths.results=... override
    local arg dir=""
    for arg in "$@"; do
        if [[ "$arg" == paths.results=* ]]; then dir="${arg#paths.results=}"; fi
    done
    if [[ -n "$dir" ]]; then
        [[ "$dir" == /* ]] || dir="$REPO/$dir"
        RESULTS="$(mkdir -p "$dir" && cd "$dir" && pwd)"
    fi
}

commit_of() { # commit_of DIR: "<sha> (dirty)" or "unknown"
    local sha
    sha="$(git -C "$1" rev-parse HEAD 2>/dev/null)" || { echo unknown; return; }
    if git -C "$1" diff --quiet HEAD -- 2>/dev/null; then echo "$sha"; else echo "$sha (dirty)"; fi
}

log_header() { # log_header SCRIPT ARGS...: job, node, commit, python and GPUs, to the job log
    local script="$1"
    shift
    echo "== harness $script  job $JOB  $(date -Is)"
    echo "args:     $*"
    echo "node:     $(hostname)  nodelist ${SLURM_JOB_NODELIST:-none}  cpus ${SLURM_CPUS_PER_TASK:-$(nproc)}"
    echo "gpus:     CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
    echo "repo:     $REPO"
    echo "commit:   $(commit_of "$REPO")"
    echo "python:   $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    echo "results:  $RESULTS"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi || echo "nvidia-smi failed (exit $?)"
    else
        echo "nvidia-smi: not found on $(hostname)"
    fi
    echo "=="
}
