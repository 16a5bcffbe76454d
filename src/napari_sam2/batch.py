"""Track many stacks on dask.distributed: ``napari-sam2 batch MANIFEST --out DIR``.

>>> from napari_sam2.batch import run_batch
>>> summary = run_batch("manifest.csv", "results/", model="sam2.1_hiera_tiny", workers=2)
>>> [row.status for row in summary.rows]

MANIFEST is a CSV file with a header row (or a JSON list of objects) with the columns
``stack`` and ``prompts`` (paths relative to the manifest) and, optionally, columns named like
``napari-sam2 track``'s options (``axis``, ``channel``, ``window``, ``direction``, ...). Every
stack is one task; each is run by the command line's own ``track`` implementation
(:func:`napari_sam2.cli.run_track`), so ``DIR/<stack name>/`` holds exactly what
``napari-sam2 track STACK --out DIR/<stack name>/`` writes (outputs written atomically,
``run.json`` last). A rerun skips the stacks whose ``run.json`` says complete and whose inputs,
options, model and outputs are unchanged, and redoes the rest. A stack that fails is reported
with its error and does not stop the others. ``DIR/batch_summary.csv`` lists every stack.

Each worker loads the network once and keeps it for the stacks it runs (see
:func:`_cached_load_model`). See docs/batch.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BatchError", "BatchSummary", "StackResult", "run_batch", "EXIT_STACKS_FAILED"]

SUMMARY_NAME = "batch_summary.csv"
EXIT_STACKS_FAILED = 3
"""At least one stack failed (the others are done); the summary names each error."""
EXIT_REFUSED = 2
"""The manifest or the options were refused: nothing ran."""

STACK_OPTIONS = {
    # manifest column (dashes or underscores) -> how its cell becomes track options
    "axis": "one",
    "channel-axis": "one",
    "channel": "many",
    "fixed": "repeat",
    "direction": "one",
    "start": "one",
    "max-frames": "one",
    "contrast-limits": "many",
    "window": "one",
    "measure": "one",
    "format": "many",
    "fill-holes": "one",
}
"""The per-stack options a manifest may set; cells with several values (``channel``,
``contrast-limits``, ``format``, ``fixed``) separate them with spaces."""
MODEL_OPTIONS = (
    "model",
    "checkpoint",
    "config",
    "device",
    "image-size",
    "random-weights",
    "precision",
)
"""Options that apply to every row (one network per worker): given to the batch, never a
manifest column."""


class BatchError(Exception):
    """The manifest or the batch options are refused (nothing runs); one line to report."""


@dataclass
class StackResult:
    """One row of ``batch_summary.csv``: how one stack went."""

    stack: str
    status: str  # done, skipped (complete from an earlier run), or failed
    frames: int | None = None
    objects: int | None = None
    seconds: float | None = None
    exit_status: int | None = None
    error: str = ""
    out: str = ""
    worker: str = ""
    model_loads: int | None = None  # networks this worker had loaded after this stack


@dataclass
class BatchSummary:
    """Every stack's result, in manifest order, and where the summary CSV was written."""

    rows: list[StackResult] = field(default_factory=list)
    path: Path | None = None
    dashboard: str | None = None

    @property
    def failed(self) -> list[StackResult]:
        return [r for r in self.rows if r.status == "failed"]

    @property
    def exit_status(self) -> int:
        """0 when every stack is done or skipped, else :data:`EXIT_STACKS_FAILED`."""
        return EXIT_STACKS_FAILED if self.failed else 0


@dataclass
class _Job:
    """What a worker needs to run one stack (plain data: it travels to the worker)."""

    name: str
    argv: list[str]  # the track command line, "track" first
    out: str
    torch_threads: int | None = None
    error: str = ""  # set when the row is refused before it is sent


# --- the model cache inside a worker ---------------------------------------------------------

_ACTIVE_WORKER: ContextVar[str | None] = ContextVar("napari_sam2_batch_worker", default=None)
_CACHE: dict[tuple[str, str], Any] = {}
_LOADS: dict[str, int] = {}
_CACHE_LOCK = threading.Lock()
_ORIGINAL_LOAD_MODEL: Callable[..., Any] | None = None


def _cached_load_model(*args: Any, **kwargs: Any) -> Any:
    """``napari_sam2.api.load_model`` that keeps the network it built for the batch worker
    running the current task, keyed by its arguments (the model options, the same for every
    row). Outside a batch task (``_ACTIVE_WORKER`` unset) it is the plain ``load_model``.

    Why a wrapper: ``run_track`` loads the network itself, and keeping one implementation of
    ``track`` matters more than a loader argument; the wrapper makes each worker load it once.
    """
    assert _ORIGINAL_LOAD_MODEL is not None
    worker = _ACTIVE_WORKER.get()
    if worker is None:
        return _ORIGINAL_LOAD_MODEL(*args, **kwargs)
    key = (worker, repr((args, sorted(kwargs.items()))))
    with _CACHE_LOCK:  # two threads of one worker must not both load it
        if key not in _CACHE:
            _CACHE[key] = _ORIGINAL_LOAD_MODEL(*args, **kwargs)
            _LOADS[worker] = _LOADS.get(worker, 0) + 1
        return _CACHE[key]


def _install_model_cache() -> None:
    global _ORIGINAL_LOAD_MODEL
    import napari_sam2.api as api

    with _CACHE_LOCK:
        if _ORIGINAL_LOAD_MODEL is None:
            _ORIGINAL_LOAD_MODEL = api.load_model
            api.load_model = _cached_load_model


def _forget_workers(client: Any) -> None:
    """Drop the networks kept for ``client``'s workers in this process (thread workers of a
    cluster about to close: nothing would use them again)."""
    try:
        workers = set(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - the memory is freed at exit anyway
        return
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] in workers]:
            del _CACHE[key]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not inside a dask worker (called directly)
        return f"pid-{os.getpid()}"


def _run_stack(job: _Job, before: Callable[[str], None] | None = None) -> StackResult:
    """Run one stack as ``napari-sam2 track`` would, in a worker; never raises for a stack's
    own problem (it becomes the result's error)."""
    from napari_sam2 import cli

    _install_model_cache()
    if job.torch_threads:
        import torch

        # workers of one machine share its cores: without this each takes them all
        torch.set_num_threads(job.torch_threads)
    if before is not None:
        before(job.name)
    worker = _worker_name()
    token = _ACTIVE_WORKER.set(worker)
    started = time.perf_counter()
    error = ""
    try:
        args = cli.build_parser().parse_args(job.argv)
        args.argv = list(job.argv)
        status = cli.run_track(args, cli.StopSignals())
    except (cli.CliError, *cli.TRACKING_ERRORS) as err:
        status, error = cli.EXIT_ERROR, str(err) or type(err).__name__
    except Exception as err:  # noqa: BLE001 - a bug in one stack must not stop the batch
        status = cli.EXIT_ERROR
        error = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    finally:
        _ACTIVE_WORKER.reset(token)
    seconds = time.perf_counter() - started
    result = _result_from_record(job.name, Path(job.out))
    result.seconds = round(seconds, 3)
    result.exit_status = status
    result.worker = worker
    result.model_loads = _LOADS.get(worker, 0)
    if status != 0:
        result.status = "failed"
        result.error = error or result.error or f"napari-sam2 track exited with {status}"
    else:
        result.status = "done"
    return result


def _read_record(out: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _result_from_record(name: str, out: Path) -> StackResult:
    """Frames and objects of the outputs under ``out``, as their run record and presence table
    tell; the record's error or stop reason when it has one."""
    result = StackResult(stack=name, status="", out=str(out))
    record = _read_record(out)
    if record is None:
        return result
    result.frames = record.get("frames_written")
    result.error = str(record.get("error") or record.get("stopped") or "")
    try:
        with open(out / "presence.csv", newline="", encoding="utf-8") as f:
            result.objects = len({row["object_id"] for row in csv.DictReader(f)})
    except (OSError, KeyError, csv.Error):
        pass
    return result


# --- the client side --------------------------------------------------------------------------


def stack_name(stack: str) -> str:
    """The output folder name of a stack: its file name without the image suffixes
    (``a.ome.tif`` -> ``a``, ``b.nii.gz`` -> ``b``, ``c.zarr`` -> ``c``)."""
    name = Path(stack.rstrip("/\\")).name
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii", ".npy", ".zarr"):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


PROMPT_SUFFIXES = (".json", ".csv", "_prompts.json", "_prompts.csv")
"""Where a folder pattern finds a stack's prompts: ``<stack name><suffix>`` beside it."""


def is_pattern(manifest: str | os.PathLike) -> bool:
    """A folder pattern (``plate1/*.tif``) instead of a manifest file."""
    return any(c in Path(manifest).name for c in "*?[")


def rows_of_pattern(pattern: str | os.PathLike) -> list[dict[str, str]]:
    """Manifest rows for the stacks a folder pattern matches, each with the prompts file named
    like the stack beside it (``a.tif`` -> ``a.json``, ``a.csv``, ``a_prompts.json`` or
    ``a_prompts.csv``); paths relative to the pattern's folder."""
    pattern = Path(pattern)
    folder = pattern.parent
    stacks = sorted(
        p for p in folder.glob(pattern.name) if p.suffix.lower() not in (".json", ".csv")
    )
    if not stacks:
        raise BatchError(f"no stack matches {pattern}")
    rows = []
    for stack in stacks:
        name = stack_name(stack.name)
        found = [folder / f"{name}{suffix}" for suffix in PROMPT_SUFFIXES]
        prompts = next((p for p in found if p.is_file()), None)
        if prompts is None:
            raise BatchError(
                f"{stack} has no prompts file beside it: name it {name}.json or {name}.csv "
                "(or write a manifest)"
            )
        rows.append({"stack": stack.name, "prompts": prompts.name})
    return rows


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a manifest (CSV with a header row, or a ``.json`` list of objects), each a
    dict of column name (lower case, dashes) to cell text; or of a folder pattern (see
    :func:`rows_of_pattern`). Refused with a :class:`BatchError` that names the problem."""
    if is_pattern(manifest):
        return rows_of_pattern(manifest)
    path = Path(manifest)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise BatchError(f"manifest {path}: cannot read it: {err.strerror or err}") from None
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except ValueError as err:
            raise BatchError(f"manifest {path} is not valid JSON: {err}") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BatchError(f"manifest {path} must be a JSON list of objects, one per stack")
        rows = [
            {k: " ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in i.items()}
            for i in items
        ]
    else:
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
    rows = [
        {str(k).strip().lower().replace("_", "-"): (v or "").strip() for k, v in r.items() if k}
        for r in rows
    ]
    rows = [r for r in rows if any(r.values())]  # blank lines
    if not rows:
        raise BatchError(f"manifest {path} lists no stacks (a header row and one row a stack)")
    columns = set().union(*rows)
    for needed in ("stack", "prompts"):
        if needed not in columns:
            raise BatchError(f"manifest {path} has no column {needed!r} (columns: stack, prompts)")
    for column in sorted(columns - {"stack", "prompts"} - set(STACK_OPTIONS)):
        if column in MODEL_OPTIONS:
            raise BatchError(
                f"manifest {path}: --{column} applies to every stack: give it to "
                "`napari-sam2 batch`, not as a column"
            )
        raise BatchError(
            f"manifest {path}: unknown column {column!r}; columns are stack, prompts and "
            f"{', '.join(STACK_OPTIONS)}"
        )
    return rows


def _row_argv(row: Mapping[str, str]) -> list[str]:
    argv: list[str] = []
    for column, kind in STACK_OPTIONS.items():
        cell = row.get(column, "")
        if not cell:
            continue
        if kind == "one":
            argv += [f"--{column}", cell]
        elif kind == "many":
            argv += [f"--{column}", *cell.replace(",", " ").split()]
        else:
            for item in cell.replace(";", " ").split():
                argv += [f"--{column}", item]
    return argv


def model_argv(
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    device: str = "auto",
    image_size: int | None = None,
    random_weights: bool = False,
    precision: str | None = None,
) -> list[str]:
    """The ``track`` options for the model (absolute paths: workers may run elsewhere)."""

    def absolute(path: str | os.PathLike) -> str:
        return str(Path(path).expanduser().absolute())

    argv: list[str] = []
    if model is not None:
        from napari_sam2.cli import _model_path

        argv += ["--model", absolute(model) if _model_path(str(model)) else str(model)]
    if checkpoint is not None:
        argv += ["--checkpoint", absolute(checkpoint)]
    if config is not None:
        argv += ["--config", absolute(config)]
    if image_size is not None:
        argv += ["--image-size", str(image_size)]
    if random_weights:
        argv.append("--random-weights")
    if precision is not None:
        argv += ["--precision", precision]
    return [*argv, "--device", device]


def plan_jobs(
    manifest: str | os.PathLike, out: str | os.PathLike, model_options: Sequence[str]
) -> list[_Job]:
    """One job per manifest row; a row whose options ``track`` refuses carries its error."""
    from napari_sam2.cli import build_parser

    rows = read_manifest(manifest)
    base = Path(manifest).expanduser().absolute().parent
    out_dir = Path(out).expanduser().absolute()
    jobs: list[_Job] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):  # line numbers of a CSV with its header
        if not row.get("stack") or not row.get("prompts"):
            raise BatchError(f"manifest row {number}: stack and prompts are both needed")
        name = stack_name(row["stack"])
        if name in seen:
            raise BatchError(
                f"manifest rows {seen[name]} and {number} both write {out_dir / name}: give "
                "the stacks different names"
            )
        seen[name] = number
        stack, prompts = base / row["stack"], base / row["prompts"]
        target = out_dir / name
        # --overwrite: a stack reaching a worker is one to redo (complete ones are skipped)
        argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(target)]
        argv.append("--overwrite")
        argv += ["--quiet", *model_options, *_row_argv(row)]
        job = _Job(name, argv, str(target))
        messages = io.StringIO()
        try:
            with contextlib.redirect_stderr(messages):
                build_parser().parse_args(argv)
        except SystemExit:  # argparse reports a bad value and exits
            lines = messages.getvalue().strip().splitlines()
            job.error = lines[-1] if lines else "invalid options"
        jobs.append(job)
    return jobs


def is_complete(job: _Job) -> bool:
    """Whether ``job``'s outputs are the complete result of this very command: ``run.json``
    says complete, its command is the one the batch would run (stack, prompts, options,
    model), every input has the size and time it recorded, and every output is there with
    the size it recorded."""
    from napari_sam2.cli import _file_facts

    record = _read_record(Path(job.out))
    if record is None or record.get("complete") is not True:
        return False
    if record.get("command") != ["napari-sam2", *job.argv]:
        return False
    for item in record.get("inputs", []):
        facts = _file_facts(Path(item.get("path", "")))
        if any(facts.get(k) != item.get(k) for k in ("bytes", "modified")):
            return False
    for item in record.get("outputs", {}).values():
        facts = _file_facts(Path(job.out) / item.get("path", ""))
        if facts.get("bytes") != item.get("bytes"):
            return False
    return True


def _start_client(
    workers: int | None,
    scheduler: str | None,
    processes: bool,
    resources: Mapping[str, float] | None = None,
) -> Any:
    try:
        import distributed
    except ImportError:
        raise BatchError(
            "batches run on dask.distributed, which is not installed: pip install "
            '"napari-sam2[batch]"'
        ) from None
    if scheduler is not None:
        return distributed.Client(scheduler)
    import importlib.util

    cores = os.cpu_count() or 1
    count = workers or cores
    # the dashboard needs bokeh; without it dask would warn at every start
    dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
    cluster = distributed.LocalCluster(
        n_workers=count,
        threads_per_worker=1,  # one stack at a time per worker: it holds one network
        processes=processes,
        dashboard_address=dashboard,
        # the stacks ask for these: a local worker must have them, else they would wait forever
        resources=dict(resources) if resources else None,
    )
    return distributed.Client(cluster)


def _dashboard(client: Any) -> str | None:
    """The dashboard's address, when the scheduler runs one (it needs bokeh)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # noqa: BLE001 - only a progress message depends on it
        return None


class _Progress:
    """One line over the stacks on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.tty = sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"napari-sam2 batch: {text}", file=sys.stderr, flush=True)

    def step(self, result: StackResult) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if self.quiet:
            return
        finished = sum(self.counts.values())
        line = (
            f"batch: {finished}/{self.total} stacks (done {self.counts['done']}, skipped "
            f"{self.counts['skipped']}, failed {self.counts['failed']})"
        )
        if result.status == "failed":
            first = result.error.splitlines()[0] if result.error else ""
            print(f"{chr(13) if self.tty else ''}{result.stack}: failed: {first}", file=sys.stderr)
        print(line, end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def write_summary(path: Path, rows: Sequence[StackResult]) -> None:
    """``batch_summary.csv``, written under a temporary name and renamed."""
    from napari_sam2.outputs import write_text_atomically

    buffer = io.StringIO()
    names = list(asdict(StackResult("", "")))
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    write_text_atomically(path, buffer.getvalue())


def run_batch(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    device: str = "auto",
    image_size: int | None = None,
    random_weights: bool = False,
    precision: str | None = None,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    processes: bool = True,
    torch_threads: int | None = None,
    resources: Mapping[str, float] | None = None,
    quiet: bool = False,
    before_stack: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Track every stack of ``manifest`` into ``out/<stack name>/`` on dask.distributed.

    ``client``: a ``distributed.Client`` to use (left open); else ``scheduler`` (an address)
    is connected to, or an in-process ``LocalCluster`` of ``workers`` workers (default: one
    per core; ``processes=False`` runs them as threads of this process) is started and closed
    at the end. The model options apply to every row. Stacks whose earlier outputs are
    complete and unchanged are skipped. A stack's failure is its row's ``error``; the batch
    goes on. ``torch_threads``: threads torch uses in each worker (default: cores / workers for
    the local cluster of processes started here, else torch's own). ``before_stack(name)``
    runs in the worker before each stack (tests use it). ``resources`` (e.g. ``{"GPU": 1}``)
    is what each stack needs of the workers' declared resources (``dask worker --resources
    GPU=1``): one stack at a time per GPU however many threads a worker has. Raises
    :class:`BatchError` for a manifest or options refused before anything runs.
    """
    out_dir = Path(out).expanduser().absolute()
    options = model_argv(model, checkpoint, config, device, image_size, random_weights, precision)
    jobs = plan_jobs(manifest, out_dir, options)
    progress = _Progress(len(jobs), quiet)
    results: dict[str, StackResult] = {}
    pending: list[_Job] = []
    for job in jobs:
        if job.error:
            results[job.name] = StackResult(
                job.name, "failed", exit_status=EXIT_REFUSED, error=job.error, out=job.out
            )
        elif is_complete(job):
            results[job.name] = _result_from_record(job.name, Path(job.out))
            results[job.name].status = "skipped"
        else:
            pending.append(job)
    for result in results.values():
        progress.step(result)

    summary = BatchSummary()
    own = client is None and bool(pending)
    if own:
        client = _start_client(workers, scheduler, processes, resources)
    try:
        if pending:
            # made before any stack runs: stacks running side by side would otherwise each
            # create it, and one that fails would remove it while another writes into it
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise BatchError(
                    f"cannot create the output folder {out_dir}: {err.strerror or err}; "
                    "choose an --out you may write"
                ) from None
            summary.dashboard = _dashboard(client)
            if summary.dashboard:
                progress.say(f"dashboard: {summary.dashboard}")
            threads = torch_threads
            if threads is None and own and scheduler is None and processes:
                count = len(client.scheduler_info().get("workers", {})) or 1
                threads = max(1, (os.cpu_count() or 1) // count)
            from distributed import as_completed

            futures = {}
            for job in pending:
                job.torch_threads = threads
                future = client.submit(
                    _run_stack,
                    job,
                    before_stack,
                    key=f"napari-sam2-{job.name}-{os.urandom(4).hex()}",
                    resources=dict(resources) if resources else None,
                    pure=False,
                )
                futures[future] = job
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - e.g. the worker died too often
                    result = _result_from_record(job.name, Path(job.out))
                    result.status = "failed"
                    result.error = f"{type(err).__name__}: {err}"
                results[job.name] = result
                progress.step(result)
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            if not processes:  # thread workers kept their networks in this very process
                _forget_workers(client)
            client.close()
            if cluster is not None and scheduler is None:
                cluster.close()
    progress.end()
    summary.rows = [results[job.name] for job in jobs]
    summary.path = out_dir / SUMMARY_NAME
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused batch leaves nothing
    write_summary(summary.path, summary.rows)
    progress.say(
        f"{sum(r.status == 'done' for r in summary.rows)} done, "
        f"{sum(r.status == 'skipped' for r in summary.rows)} skipped, "
        f"{len(summary.failed)} failed; summary in {summary.path}"
    )
    return summary


# --- the command line -------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``napari-sam2 batch`` on the command's subparsers."""
    p = sub.add_parser(
        "batch",
        help="track many stacks listed in a manifest, on dask.distributed",
        description="Track every stack listed in MANIFEST (CSV with the columns stack, "
        "prompts and optional track options; or a JSON list) into OUT/<stack name>/, as "
        "`napari-sam2 track` writes them. Stacks already complete are skipped. Exit status: "
        "0 all done, 2 refused (nothing ran), 3 at least one stack failed "
        "(OUT/batch_summary.csv says why). See docs/batch.md.",
    )
    p.add_argument(
        "manifest",
        help="the manifest: .csv with a header row, or .json; or a folder pattern in quotes "
        "('plate1/*.tif') with each stack's prompts beside it as NAME.json or NAME.csv",
    )
    p.add_argument("--out", required=True, help="output folder: one folder per stack in it")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="as for track, for every stack")
    p.add_argument("--checkpoint", metavar="PATH", help="as for track, for every stack")
    p.add_argument("--config", metavar="CONFIG.json", help="as for track, for every stack")
    p.add_argument("--image-size", type=int, metavar="PIXELS", help="as for track")
    p.add_argument("--random-weights", action="store_true", help="random weights (benchmarks only)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", help="as for track (default auto), for every stack")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, metavar="N", help="workers of the local cluster (default: cores)"
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing dask scheduler, e.g. tcp://h:8786"
    )
    p.add_argument(
        "--resources",
        nargs="+",
        metavar="NAME=N",
        help="what each stack needs of the workers' resources, e.g. GPU=1 with workers "
        "started as `dask worker --resources GPU=1` (one stack per GPU at a time)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def run_batch_command(args: argparse.Namespace) -> int:
    """``napari-sam2 batch``; returns the exit status (see :func:`add_parser`)."""
    if args.workers is not None and args.workers < 1:
        print("napari-sam2: error: --workers must be >= 1", file=sys.stderr)
        return EXIT_REFUSED
    resources: dict[str, float] = {}
    for item in args.resources or []:
        name, _, amount = item.partition("=")
        try:
            resources[name.strip()] = float(amount)
        except ValueError:
            print(f"napari-sam2: error: --resources takes NAME=N, got {item!r}", file=sys.stderr)
            return EXIT_REFUSED
    try:
        summary = run_batch(
            args.manifest,
            args.out,
            model=args.model,
            checkpoint=args.checkpoint,
            config=args.config,
            device=args.device,
            image_size=args.image_size,
            random_weights=args.random_weights,
            precision=args.precision,
            workers=args.workers,
            scheduler=args.scheduler,
            resources=resources or None,
            quiet=args.quiet,
        )
    except BatchError as err:
        print(f"napari-sam2: error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    return summary.exit_status
