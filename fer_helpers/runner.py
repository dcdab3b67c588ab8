"""``fer-study run``: execute the parameter set's notebooks in order with papermill, export HTML, build the index.

- Each notebook gets two parameters, ``PARAMS_FILE`` (the run's resolved parameters) and ``RUN_DIR``;
  it reads what earlier notebooks wrote from ``RUN_DIR`` and never shares hidden state.
- Resume: a notebook whose last run finished with the same parameters and the same notebook source
  is skipped, until an earlier notebook reruns; ``force=True`` reruns everything.
- Failure: the run stops at the failing notebook with its name, the failing cell and the path of the
  partial output; outputs of earlier notebooks stay as they were.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import StudyParams, load_params
from .io import RunDir, read_json, write_json
from .paths import NOTEBOOKS_DIR
from .report import SHOWN_STATUSES, build_index, export_figures, export_html

STATE_FILE = "runner_state.json"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the cell and the partial output."""

    def __init__(self, notebook: str, message: str, partial: Path):
        super().__init__(message)
        self.notebook = notebook
        self.partial = partial


@dataclass
class RunResult:
    run_dir: Path
    index: Path
    statuses: dict[str, str]
    seconds: dict[str, float]


def _source_digest(nb: Path) -> str:
    """The notebook and the library it calls (every module, ``stages/`` included: the same digest as the stage
    caches'): a change to either makes the notebook's last run stale."""
    from . import io

    return hashlib.sha256(nb.read_bytes() + io.code_digest().encode()).hexdigest()[:16]


#: the stages whose outside inputs (data files, model weights) each notebook reads; a notebook not named here
#: (04-06, or one of the user's) is taken to read them all
NOTEBOOK_READS = {"01_degradation": ("data",), "02_quality_check": ("data",), "03_restoration": ("data", "restoration")}
ALL_STAGES = ("data", "restoration", "classification")


def _inputs_digests(params: StudyParams) -> dict[str, str]:
    """Per stage, a digest of the files outside the code and the parameters that it reads (the same lists its
    cache key takes): a replaced weights file or an edited data folder makes the notebooks that read them stale,
    where the notebook and the library alone would not (the report kept an old model's numbers)."""
    from .io import files_digest, listing_digest
    from .stages import classification, restoration
    from .stages import data as data_stage

    return {"data": listing_digest(data_stage.data_inputs(params)),
            "restoration": files_digest(restoration.model_inputs(params)),
            "classification": files_digest(classification.model_inputs(params))}


def _inputs_digest(digests: Mapping[str, str], notebook: str) -> str:
    return "|".join(digests[stage] for stage in NOTEBOOK_READS.get(notebook, ALL_STAGES))


def _describe_failure(exc: Exception) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        first = str(exc.evalue).strip().splitlines()[0] if str(exc.evalue).strip() else ""
        return f"cell {exc.exec_count} (cell index {exc.cell_index}) raised {exc.ename}: {first}"
    return f"{type(exc).__name__}: {exc}"


def run_study(params_file: str | Path, force: bool = False, **kwargs: Any) -> RunResult:
    """Run the study for one parameter set (see :func:`_run_study`). With ``force`` every notebook reruns and
    every stage inside them recomputes once, whatever its cache holds: a token in the environment, which the
    notebook kernels inherit, marks what this run computed."""
    import uuid

    from .io import FORCE_ENV

    before = os.environ.get(FORCE_ENV)
    if force:
        os.environ[FORCE_ENV] = uuid.uuid4().hex
    try:
        return _run_study(params_file, force=force, **kwargs)
    finally:
        if before is None:
            os.environ.pop(FORCE_ENV, None)
        else:
            os.environ[FORCE_ENV] = before


def _run_study(
    params_file: str | Path,
    force: bool = False,
    only: Sequence[str] | None = None,
    run_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    kernel_name: str | None = None,
) -> RunResult:
    """Run the study for one parameter set; returns the run folder, the index path and per-notebook status."""
    import papermill as pm
    from tqdm.auto import tqdm

    params: StudyParams = load_params(params_file, dict(overrides or {}))
    _check_data_path(params)  # before any notebook starts: an unset variable or a missing folder fails now
    run = RunDir.for_params(params, run_dir)
    run.write_provenance(params)
    digest = params.digest()
    input_digests = _inputs_digests(params)
    state_path = run.path(STATE_FILE)
    state: dict[str, Any] = read_json(state_path) if state_path.exists() else {}
    notebooks = list(params.notebooks)
    if only:
        unknown = [o for o in only if o not in notebooks]
        if unknown:
            raise ValueError(f"--only {', '.join(unknown)}: not in this parameter set's notebooks ({', '.join(notebooks)})")

    statuses: dict[str, str] = {}
    seconds: dict[str, float] = {}
    upstream_reran = False
    said_figures = False

    bar = tqdm(notebooks, desc="notebooks", unit="nb", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        src = NOTEBOOKS_DIR / f"{name}.ipynb"
        out_nb = run.path("notebooks", f"{name}.ipynb")
        out_html = run.path(f"{name}.html")
        src_digest = _source_digest(src)
        keys = {"params": digest, "source": src_digest, "inputs": _inputs_digest(input_digests, name)}
        prev = state.get(name, {})
        unchanged = prev.get("status") == "done" and all(prev.get(k) == v for k, v in keys.items()) and out_html.exists()
        if only and name not in only:
            if upstream_reran and name in state:
                # its inputs changed under it: mark it so the next run without --only reruns it
                state[name] = {**state[name], "status": "stale"}
                write_json(state_path, state)
                statuses[name] = "stale (an earlier notebook reran; run without --only)"
            else:
                statuses[name] = "skipped (unchanged)" if unchanged else "not run (--only)"
            continue
        if unchanged and not force and not upstream_reran:
            statuses[name] = "skipped (unchanged)"
            bar.write(f"[{name}] unchanged since its last run: skipped (use --force to rerun)")
            continue
        upstream_reran = True
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        _remove_outputs(run, name, prev)  # a failure must not leave the previous run's page or tables behind
        state[name] = {"status": "running", **keys}
        write_json(state_path, state)
        before = _headline_stamps(run)
        kernels = _ipc_kernel_manager()
        kernels.stderr_path = str(run.path("logs", f"{name}.kernel.log"))  # not the user's terminal
        kernels.peak_rss_mib = None
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(src), str(out_nb),
                parameters={"PARAMS_FILE": str(run.params_file), "RUN_DIR": str(run.root), "OVERRIDES": {}},
                cwd=str(NOTEBOOKS_DIR), kernel_name=kernel_name, progress_bar=False, log_output=False,
                kernel_manager_class=kernels,
            )
        except Exception as exc:  # papermill raises PapermillExecutionError for a failing cell
            seconds[name] = time.perf_counter() - t0
            what = _describe_failure(exc)
            state[name] = {"status": "failed", **keys, "error": what,
                           "peak_rss_mib": kernels.peak_rss_mib, "headlines": _written_since(run, before)}
            write_json(state_path, state)
            statuses[name] = f"failed: {what}"
            try:
                export_html(out_nb, out_html)
            except Exception:  # the partial notebook may not even exist
                pass
            for rest in notebooks[notebooks.index(name) + 1 :]:
                statuses[rest] = "not run (an earlier notebook failed)"
            build_index(run, params, statuses, _hidden_headlines(state, statuses))
            raise NotebookFailed(name, f"notebook {name} failed in {what}; partial output: {out_nb}", out_nb) from None
        seconds[name] = time.perf_counter() - t0
        export_html(out_nb, out_html)
        figures = export_figures(out_nb, run.path("figures"), name)
        if figures["reason"] and figures["figures"] and not said_figures:  # once per run, not per notebook
            bar.write(f"[figures] each figure is saved as JSON in figures/; {figures['reason']}")
            said_figures = True
        state[name] = {"status": "done", **keys, "seconds": round(seconds[name], 1),
                       "peak_rss_mib": kernels.peak_rss_mib, "headlines": _written_since(run, before), "figures": figures}
        write_json(state_path, state)
        statuses[name] = "done"
        memory = f", peak memory {kernels.peak_rss_mib / 1024:.2f} GiB" if kernels.peak_rss_mib else ""
        bar.write(f"[{name}] done in {seconds[name]:.1f} s{memory}")
    index = build_index(run, params, statuses, _hidden_headlines(state, statuses))
    return RunResult(run.root, index, statuses, seconds)


@functools.lru_cache(maxsize=1)
def _ipc_kernel_manager() -> type:
    """A kernel manager that talks to the local kernel over IPC sockets in a private temporary folder: no TCP
    ports, and no "running over TCP without encryption" warning from every notebook's kernel."""
    import atexit
    import shutil
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    folder = tempfile.mkdtemp(prefix="fer-study-kernels-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)

    class IPCKernelManager(AsyncKernelManager):
        #: where the kernel process's own stderr goes (its infrastructure logs, C-level writes): set per notebook
        stderr_path: str | None = None
        #: the last kernel's peak resident memory in MiB, read as it shuts down (None where the OS does not say)
        peak_rss_mib: float | None = None

        def __init__(self, **kwargs: Any):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(folder, "kernel"))
            super().__init__(**kwargs)

        async def start_kernel(self, **kwargs: Any) -> None:
            if not self.stderr_path:
                return await super().start_kernel(**kwargs)
            Path(self.stderr_path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.stderr_path, "ab") as log:  # the kernel keeps its own copy of the descriptor
                kwargs.setdefault("stderr", log)
                return await super().start_kernel(**kwargs)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            pid = getattr(self.provisioner, "pid", None)  # the local provisioner's kernel process
            if pid:
                type(self).peak_rss_mib = _peak_rss_mib(pid)
            return await super().shutdown_kernel(now=now, restart=restart)

    return IPCKernelManager


def _peak_rss_mib(pid: int) -> float | None:
    """A live process's peak resident memory in MiB (Linux's VmHWM; worker processes it started not included);
    None where ``/proc`` does not say (macOS, Windows)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # the kernel reports kB
    return None


def _check_data_path(params: StudyParams) -> None:
    from .data import DataError

    path = params.data_path()  # raises ParamsError naming an unset $VARIABLE
    if not path.exists():
        raise DataError(f"data.path {path} does not exist; set data.path (or the variable it names) to your data "
                        f"(a folder with {params.data.eval_split}/<class>/ images, or fer2013.csv)")


def _headline_stamps(run: RunDir) -> dict[str, int]:
    d = run.headlines_dir
    return {f.stem: f.stat().st_mtime_ns for f in d.glob("*.json")} if d.is_dir() else {}


def _written_since(run: RunDir, before: Mapping[str, int]) -> list[str]:
    """The headline tables a notebook wrote: new files, or files rewritten since ``before``."""
    return sorted(k for k, t in _headline_stamps(run).items() if before.get(k) != t)


def _remove_outputs(run: RunDir, name: str, prev: Mapping[str, Any]) -> None:
    run.path(f"{name}.html").unlink(missing_ok=True)
    for f in run.path("figures").glob(f"{name}_*"):
        f.unlink()
    for key in prev.get("headlines", []):
        (run.headlines_dir / f"{key}.json").unlink(missing_ok=True)


def _hidden_headlines(state: Mapping[str, Any], statuses: Mapping[str, str]) -> set[str]:
    """Headline tables of notebooks that did not run this time (stale, not run): not this run's answer."""
    return {k for nb, status in statuses.items() if status not in SHOWN_STATUSES and not status.startswith("failed")
            for k in state.get(nb, {}).get("headlines", [])}
