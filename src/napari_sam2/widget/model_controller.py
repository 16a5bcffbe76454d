"""The model part of the SAM 2 dock widget, without Qt: what is chosen, what is loaded, and the
work of downloading and loading it.

A :class:`ModelController` holds the choice the user made (an entry of the model list, an
optional checkpoint file, an image size, the device), the model loaded for it, and what went
wrong last; it says what the model state line shows (:meth:`ModelController.status`). The list
holds the official checkpoints and the registered fine-tunes (MedSAM2 at 512 px, micro-sam's
light-microscopy model), each described by its source, size, licence and image size
(:meth:`ModelController.describe`). The Qt view
(:mod:`napari_sam2.widget.model_view`) forwards the user's actions here and renders the result.

Threads: :meth:`~ModelController.load` and :meth:`~ModelController.download` run in worker
threads; they compute and return (or raise :class:`ModelError`) and change nothing. Their
outcome is recorded in the GUI thread with :meth:`~ModelController.record_loaded`,
:meth:`~ModelController.record_failure` and :meth:`~ModelController.finish_download`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "SUMMARY_LIMIT",
    "CheckpointFile",
    "ModelController",
    "ModelError",
    "ModelRequest",
    "short_message",
]

DEFAULT_MODEL = "sam2.1_hiera_tiny"
SUMMARY_LIMIT = 110
"""Longest summary of an error: a notification shows it on one line."""

ProgressCallback = Callable[[int, "int | None"], object]


class ModelError(Exception):
    """A model could not be downloaded or loaded.

    ``summary`` is one short line for a notification and the state line (``str()`` of the
    error); ``detail`` is the whole story (the full path, the URL, where to put the file).
    """

    def __init__(self, summary: str, detail: str | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.detail = detail or summary

    @classmethod
    def from_exception(
        cls, exc: BaseException, paths: Sequence[str | os.PathLike] = ()
    ) -> ModelError:
        """Wrap any exception: its first sentence (files by name, URLs left out) as summary."""
        if isinstance(exc, ModelError):
            return exc
        text = str(exc) or type(exc).__name__
        return cls(short_message(text, paths), text)


def short_message(
    text: str, paths: Sequence[str | os.PathLike] = (), limit: int = SUMMARY_LIMIT
) -> str:
    """The first sentence of ``text`` on one line, files by their names, URLs left out, at most
    ``limit`` characters."""
    for path in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        text = text.replace(path, Path(path).name)
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    # "... no network connection to https://host/file.pt? To install ..." -> "... connection?"
    line = re.sub(
        r"\s*(?:\b(?:from|to|for|at)\s+)?https?://\S+?(?=[\s,;)]|[.?!](?:\s|$)|$)", "", line
    )
    end = re.search(r"[.?!](?=\s|$)", line)
    if end is not None:
        line = line[: end.end()]
    line = line.rstrip(". ")
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


@dataclass(frozen=True)
class ModelRequest:
    """What to load: an entry of the model list, a checkpoint file (or None), a device, and an
    image size (None: the model's own, or a registered fine-tune's by its file name)."""

    name: str
    checkpoint: str | None
    device: str
    image_size: int | None = None


@dataclass(frozen=True)
class CheckpointFile:
    """What a checkpoint file holds, as far as its parameter names and shapes tell.

    ``recognised``: the official model it is (None: another size or resolution, or unreadable);
    ``looks_like``: a description for messages; ``error``: why it cannot be read (None: it
    can); ``shapes``: its state dict as tensors on the meta device (names and shapes only).
    """

    path: str
    recognised: str | None
    looks_like: str
    error: str | None
    shapes: Mapping[str, Any]

    @property
    def filename(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class _Failure:
    kind: str  # "download" or "load"
    name: str
    checkpoint: str | None
    device: str | None  # None: whatever the device (a download)
    error: ModelError

    def concerns(self, request: ModelRequest) -> bool:
        return (self.name, self.checkpoint) == (request.name, request.checkpoint) and (
            self.device is None or self.device == request.device
        )


class ModelController:
    """The state of the widget's model part and the work on it (no Qt).

    Parameters
    ----------
    names
        The registered entries of the model list (default: the checkpoints of the weights
        store, official and fine-tunes).
    default
        The entry chosen at first.
    """

    def __init__(self, names: Sequence[str] | None = None, default: str = DEFAULT_MODEL) -> None:
        if names is None:
            from napari_sam2.weights import CHECKPOINT_NAMES

            names = CHECKPOINT_NAMES
        self.official: tuple[str, ...] = tuple(names)
        self.custom: dict[str, Any] = {}
        """Entries added by :meth:`use_model`: built models or configs, by their list name."""
        self.name: str = default if default in self.official else self.official[0]
        self.checkpoint: str | None = None
        self.image_size: int | None = None
        """The input size asked for (None: the model's own, see :meth:`set_image_size`)."""
        self.device: str = "auto"
        self.precision: str = "auto"
        """``auto``, ``float32`` or ``bfloat16``: see :meth:`set_precision`."""
        self.loaded: tuple[ModelRequest, Any] | None = None
        """The model in memory and the request it was loaded for."""
        self.downloading: str | None = None
        """The name being downloaded, None when no download runs."""
        self.loading: ModelRequest | None = None
        """The request a worker is loading, None when none is."""
        self._failure: _Failure | None = None
        self._file: CheckpointFile | None = None
        self._file_stamp: tuple | None = None
        self._problems: dict[tuple, str | None] = {}  # (entry, file, file version) -> problem

    # --- the choice (GUI thread) ---------------------------------------------------------

    def names(self) -> list[str]:
        """The model list: the official names, then the entries added by :meth:`use_model`."""
        return list(self.official) + [n for n in self.custom if n not in self.official]

    def choose(self, name: str) -> None:
        """Choose an entry of the model list."""
        if name not in self.names():
            raise ValueError(f"unknown model {name!r}: choose one of {', '.join(self.names())}")
        self.name = name

    def use_model(self, model: Any, name: str = "custom model") -> None:
        """Add a model to the list and choose it: a built network (used as it is, or with the
        weights of a checkpoint file) or a ``SAM2Config`` (which needs a checkpoint file)."""
        if name in self.official:
            raise ValueError(f"{name!r} is an official model's name: give the custom one another")
        self.custom[name] = model
        self._problems.clear()  # the entry may take other files now
        if self.loaded is not None and self.loaded[0].name == name:
            self.loaded = None  # the entry now means another model
        self.name = name

    def set_checkpoint(self, path: str | os.PathLike | None) -> str | None:
        """Give a checkpoint file (None or "" for none) and read what it holds.

        Where the file is an official model and the chosen entry cannot take it, the choice
        switches to that model; the name switched to is returned (None: no switch).
        """
        text = str(path).strip() if path is not None else ""
        self.checkpoint = text or None
        if self.checkpoint is None:
            return None
        file = self.checkpoint_file()
        if file is None or file.recognised is None:
            return None
        fine_tune = _registered_fine_tune(file)
        if fine_tune is not None and fine_tune in self.official and self.image_size is None:
            # a fine-tune's published file (MedSAM2_latest.pt) runs at its own size: follow it
            if fine_tune != self.name:
                self.name = fine_tune
                return self.name
            return None
        if file.recognised not in self.official:
            return None
        if file.recognised != self.name and self._checked_problem(self.name, file) is not None:
            self.name = file.recognised
            return self.name
        return None

    def set_device(self, device: str) -> None:
        self.device = device

    def set_precision(self, precision: str) -> None:
        """Compute in ``precision``: ``auto`` (bfloat16 autocast on GPUs and on CPUs where it
        measures faster, see :func:`~napari_sam2.tracking.device.cpu_has_fast_bf16`; float32
        elsewhere), ``float32`` or ``bfloat16`` (autocast).

        Raises ValueError for another name. It applies from the next session on: it is part
        of :meth:`key`, so the widget makes a new tracker with it (the model stays loaded).
        """
        from napari_sam2.tracking.device import PRECISIONS

        choice = str(precision).strip().lower()
        if choice not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
        self.precision = choice

    def compute_dtype(self, parameter: Any, precision: str | None = None) -> Any:
        """The autocast dtype of trackers for a model whose parameters are like ``parameter``
        (a tensor), under ``precision`` (default: the current choice); None: no autocast."""
        import torch

        from napari_sam2.tracking.device import autocast_dtype

        choice = precision or self.precision
        if choice == "auto" and parameter.dtype != torch.float32:
            return None  # a float64 (or half) model chose its precision itself: keep it
        return autocast_dtype(parameter.device, choice)

    def set_image_size(self, size: int | str | None) -> None:
        """Run the model at ``size`` pixels (None, "" or "auto": its own size).

        For a fine-tune that is not registered: its checkpoint file with the size it was
        trained at (e.g. 512 for a MedSAM2-style file). Raises ValueError for a size no
        SAM 2 network takes (it must be a positive multiple of 32).
        """
        if size is None or (isinstance(size, str) and size.strip().lower() in ("", "auto")):
            self.image_size = None
            return
        value = int(size)
        from napari_sam2.model import SAM2Config

        SAM2Config.from_name("sam2.1_hiera_tiny", image_size=value)  # says what is wrong
        self.image_size = value

    def request(self) -> ModelRequest:
        """What the current choice asks to load."""
        return ModelRequest(self.name, self.checkpoint, self.device, self.image_size)

    def key(self) -> tuple:
        """The choice as a session key: (checkpoint path or model name, device, list entry),
        and the image size where one is asked for.

        The list entry is part of it so that choosing another model for the same file makes a
        new session (with the new model, or its error) rather than keeping the old one. A
        precision other than ``auto`` ends it as ``("precision", name)``: choosing one makes a
        new session (a new tracker; the model stays loaded).
        """
        key = (self.checkpoint or self.name, self.device, self.name)
        key = key if self.image_size is None else (*key, self.image_size)
        return key if self.precision == "auto" else (*key, ("precision", self.precision))

    @staticmethod
    def precision_of_key(key: tuple) -> str:
        """The precision a :meth:`key` was taken with (``auto`` where it names none)."""
        tagged = [k for k in key if isinstance(k, tuple) and len(k) == 2 and k[0] == "precision"]
        return str(tagged[-1][1]) if tagged else "auto"

    def request_for_key(self, key: tuple) -> ModelRequest:
        """The request behind a :meth:`key` read earlier. A 2-tuple (text, device) is read as
        before: a text that is no list entry is a checkpoint path for the chosen entry."""
        key = tuple(k for k in key if not isinstance(k, tuple))  # the precision: not the model's
        text, device = key[0], key[1]
        name = key[2] if len(key) > 2 else None
        size = key[3] if len(key) > 3 else None
        if name is not None:
            return ModelRequest(name, None if text == name else text, device, size)
        if text in self.names():
            return ModelRequest(text, None, device)
        return ModelRequest(self.name, text, device)

    def checkpoint_file(self) -> CheckpointFile | None:
        """What the checkpoint file holds (read once per file version; None without a file)."""
        if self.checkpoint is None:
            return None
        path = Path(self.checkpoint).expanduser()
        try:
            stat = path.stat()
            stamp = (self.checkpoint, stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (self.checkpoint, None, None)
        if self._file is None or self._file_stamp != stamp:
            self._file, self._file_stamp = _read_checkpoint_file(self.checkpoint), stamp
        return self._file

    # --- what the widget shows ----------------------------------------------------------------

    def status(self) -> str:
        """The model state line: what is loaded, or what using the choice would take."""
        request = self.request()
        if self.downloading is not None:
            return f"downloading {self.downloading}…"
        if self.loading is not None and self.loading == request:
            return f"loading {request.name}…"
        failure = self._failure
        if failure is not None and failure.concerns(request):
            return f"{failure.kind} failed: {failure.error.summary}"
        if self.loaded is not None and self.loaded[0] == request:
            return f"loaded: {self.describe_loaded(full_path=False)}{self._precision_note()}"
        # a custom entry (a built model or a config) has its own size: the choice is not applied
        asked = self.image_size is not None and self.name not in self.custom
        at = f" at {self.image_size} px" if asked else ""
        if self.checkpoint is not None:
            file = self.checkpoint_file()
            assert file is not None
            problem = self._checked_problem(self.name, file)
            if problem is not None:
                return problem
            if self.name in self.official and file.recognised is not None:
                if file.recognised != self.name:  # a fine-tune's file: its entry, its size
                    return f"file: {file.recognised} weights as {self.name}{at}"
                return f"file: recognised as {file.recognised}{at}"
            return f"file: fits {self.name}{at}"
        entry = self.custom.get(self.name)
        if entry is not None:
            return "needs a checkpoint file" if _is_config(entry) else "in memory"
        from napari_sam2.weights import WeightsError, checkpoint_info, checkpoint_status

        try:
            state = checkpoint_status(self.name) + at
            info = checkpoint_info(self.name)
        except (WeightsError, OSError, ValueError) as exc:
            return f"error: {short_message(str(exc))}"
        if info.fine_tune:
            # what the user takes on: where it is from, how big, its licence, its size
            return f"{state} · {info.source} · {info.summary()}"
        return state

    def _precision_note(self) -> str:
        """`` · bfloat16 autocast`` where trackers of the loaded model run under autocast ("":
        in the parameters' dtype, which the state line shows already)."""
        assert self.loaded is not None
        model = self.loaded[1]
        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        if parameter is None:
            return ""
        from napari_sam2.tracking.device import precision_label

        dtype = self.compute_dtype(parameter)
        return "" if dtype is None else f" · {precision_label(dtype)}"

    def detail(self) -> str:
        """The long form of :meth:`status` (the state line's tooltip): full paths, URLs, hints."""
        request = self.request()
        failure = self._failure
        if failure is not None and failure.concerns(request):
            return failure.error.detail
        if self.loaded is not None and self.loaded[0] == request:
            return self.describe_loaded()
        if self.checkpoint is not None:
            file = self.checkpoint_file()
            assert file is not None
            looks = f": {file.looks_like}" if file.error is None else f": {file.error}"
            return f"{Path(self.checkpoint).expanduser()}{looks}"
        if self.name in self.official:
            from napari_sam2.weights import WEIGHTS_ENV, cache_dir, checkpoint_info

            text = (
                f"official weights of {self.name}, downloaded once into {cache_dir()}; offline, "
                f"put the .pt file into a folder named by ${WEIGHTS_ENV} or give it as checkpoint"
            )
            try:
                info = checkpoint_info(self.name)
            except ValueError:
                return text
            if info.fine_tune:
                text = (
                    f"weights of {self.name} from {info.url}, downloaded once into "
                    f"{cache_dir()}; offline, put {info.filename} into a folder named by "
                    f"${WEIGHTS_ENV} or give it as checkpoint"
                )
            return f"{self.describe(self.name)}\n{text}"
        return ""

    def describe(self, name: str) -> str:
        """One line on a registered entry: what it is, its source, download size, licence and
        image size ("" for entries the weights store does not know)."""
        from napari_sam2.weights import WeightsError, describe_checkpoint

        try:
            return describe_checkpoint(name)
        except WeightsError:
            return ""

    def can_download(self) -> bool:
        """Whether the Download button makes sense: an official model not yet downloaded."""
        if self.downloading is not None or self.checkpoint is not None:
            return False
        if self.name not in self.official:
            return False
        from napari_sam2.weights import WeightsError, checkpoint_status

        try:
            return checkpoint_status(self.name) == "needs download"
        except (WeightsError, OSError, ValueError):
            return False

    def describe_loaded(self, full_path: bool = True) -> str:
        """What is loaded: ``"sam2.1_hiera_tiny · /path/file.pt · cpu · float32"`` ("" if none).

        The file is the checkpoint given, the official weights file, or "in memory".
        """
        if self.loaded is None:
            return ""
        request, model = self.loaded
        if request.checkpoint is not None:
            path = Path(request.checkpoint).expanduser()
            file = str(path) if full_path else path.name
        elif request.name in self.official:
            path = _weights_file(request.name)
            file = "official weights" if path is None else (str(path) if full_path else path.name)
        else:
            file = "in memory"
        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        where = [] if parameter is None else [str(parameter.device), _dtype_name(parameter.dtype)]
        size = getattr(getattr(model, "config", None), "image_size", None)
        # the size a registered model runs at, where it is not the official size that goes
        # without saying (a custom entry's size is the user's own choice)
        if size is not None and size != 1024 and request.name in self.official:
            where.append(f"{size} px")
        return " · ".join([request.name, file, *where])

    # --- work (worker threads) ------------------------------------------------------------

    def load(self, request: ModelRequest | None = None) -> Any:
        """Worker thread: the model for ``request`` (default: the current choice), from memory
        when it is loaded already. Changes nothing; raises :class:`ModelError`."""
        request = request or self.request()
        loaded = self.loaded
        if loaded is not None and loaded[0] == request:
            return loaded[1]
        paths = [request.checkpoint] if request.checkpoint else []
        try:
            return self._build(request)
        except Exception as exc:  # any failure reaches the user as one short message
            error = ModelError.from_exception(exc, paths)
            if request.checkpoint is not None and isinstance(exc, ValueError):
                # a file that does not fit: say so as the state line does, briefly
                problem = self._file_problem(request.name, _read_checkpoint_file(paths[0]))
                error = ModelError(problem or error.summary, error.detail)
            raise error from exc

    def download(self, name: str, progress: ProgressCallback | None = None) -> Path:
        """Worker thread: download the official checkpoint ``name`` (see :meth:`begin_download`);
        ``progress(bytes_done, bytes_total)`` as it goes. Raises :class:`ModelError`."""
        from napari_sam2.weights import ensure_checkpoint

        try:
            return ensure_checkpoint(name, progress=progress)
        except Exception as exc:
            raise ModelError.from_exception(exc) from exc

    # --- outcomes (GUI thread) -----------------------------------------------------------------

    def begin_load(self, request: ModelRequest) -> None:
        """A worker started loading the model of ``request`` (it may download it first)."""
        self.loading = request

    def record_loaded(self, request: ModelRequest, model: Any) -> None:
        """A worker loaded ``model`` for ``request``: keep it (the one model in memory)."""
        self.loaded = (request, model)
        if self.loading == request:
            self.loading = None
        if self._failure is not None and self._failure.concerns(request):
            self._failure = None

    def record_failure(self, kind: str, request: ModelRequest, error: BaseException) -> None:
        """A worker failed to ``kind`` ("load" or "download") the model of ``request``."""
        error = ModelError.from_exception(error, [request.checkpoint or ""])
        if self.loading == request:
            self.loading = None
        device = None if kind == "download" else request.device
        self._failure = _Failure(kind, request.name, request.checkpoint, device, error)

    def begin_download(self) -> str:
        """Mark the chosen official model as downloading; returns its name for the worker."""
        if self.name not in self.official:
            raise ValueError(f"{self.name!r} is not an official model: there is nothing to fetch")
        self.downloading = self.name
        self._failure = None
        return self.name

    def finish_download(self, error: BaseException | None = None) -> None:
        """The download ended, with ``error`` if it failed."""
        name, self.downloading = self.downloading, None
        if error is not None and name is not None:
            self.record_failure("download", ModelRequest(name, None, self.device), error)

    # --- helpers ------------------------------------------------------------------------------

    def _config_of(self, name: str) -> Any:
        """The configuration of a list entry (None where there is none to check against)."""
        entry = self.custom.get(name)
        if entry is not None:
            return entry if _is_config(entry) else getattr(entry, "config", None)
        from napari_sam2.model import SAM2Config

        try:
            return SAM2Config.from_name(name)
        except ValueError:
            return None

    def _checked_problem(self, name: str, file: CheckpointFile) -> str | None:
        """:meth:`_file_problem` of the current file, remembered per entry and file version."""
        key = (name, file.path, self._file_stamp)
        if key not in self._problems:
            if len(self._problems) > 64:
                self._problems.clear()
            self._problems[key] = self._file_problem(name, file)
        return self._problems[key]

    def _file_problem(self, name: str, file: CheckpointFile) -> str | None:
        """Why the entry ``name`` cannot take ``file`` (None: it can), for the state line."""
        if file.error is not None:
            return file.error
        config = self._config_of(name)
        if config is None:
            return f"{name} takes no checkpoint file: clear the file or choose another model"
        from napari_sam2.model import state_dict_mismatch

        if state_dict_mismatch(file.shapes, config) is None:
            return None
        if file.recognised is not None:
            return (
                f"{file.filename} holds {file.recognised}, not {name}: "
                f"choose {file.recognised} or another file"
            )
        return f"{file.filename} is not {name}: it holds {file.looks_like}; choose its model"

    def _build(self, request: ModelRequest) -> Any:
        from napari_sam2.api import load_model
        from napari_sam2.tracking.device import resolve_device

        entry = self.custom.get(request.name)
        if entry is not None and not _is_config(entry) and request.checkpoint is None:
            if request.device != "auto":
                target = resolve_device(request.device)
                parameter = next(iter(entry.parameters()), None)
                if parameter is not None and parameter.device != target:
                    entry.to(target)
            return entry.eval()
        device = resolve_device(request.device)
        if entry is not None:
            config = entry if _is_config(entry) else getattr(entry, "config", None)
            if config is None:
                raise ValueError(f"{request.name} takes no checkpoint file: clear the file")
            if request.checkpoint is None:
                raise ValueError(f"{request.name} needs a checkpoint file: give its weights")
            return load_model(config, request.checkpoint, device).eval()
        if request.checkpoint is not None:
            return load_model(
                request.name, request.checkpoint, device, image_size=request.image_size
            ).eval()
        from napari_sam2.model import SAM2Config, build_sam2
        from napari_sam2.weights import ensure_checkpoint

        # a fine-tune's name gives its own size (MedSAM2: 512 px) unless one is asked for
        config = SAM2Config.from_name(request.name, image_size=request.image_size)
        return build_sam2(config, ensure_checkpoint(request.name), device).eval()


def _registered_fine_tune(file: CheckpointFile) -> str | None:
    """The registered fine-tune whose published file name ``file`` has and whose architecture
    it holds (None: none)."""
    from napari_sam2.weights import registered_file

    info = registered_file(file.path)
    if info is None or not info.fine_tune or info.architecture != file.recognised:
        return None
    return info.name


def _is_config(entry: Any) -> bool:
    from napari_sam2.model import SAM2Config

    return isinstance(entry, SAM2Config)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _weights_file(name: str) -> Path | None:
    """The file the official weights of ``name`` come from (None: not on this machine)."""
    from napari_sam2.weights import WeightsError, cache_dir, checkpoint_info, find_local_checkpoint

    try:
        local = find_local_checkpoint(name)
        cached = cache_dir() / checkpoint_info(name).filename
    except (WeightsError, OSError):
        return None
    if local is not None:
        return local
    return cached if cached.is_file() else None


def _read_checkpoint_file(path_text: str) -> CheckpointFile:
    """Read a checkpoint file's parameter names and shapes (the tensors are mapped, not read)."""
    import torch

    from napari_sam2.model import describe_state_dict, identify_checkpoint, load_checkpoint

    path = Path(path_text).expanduser()
    if not path.is_file():
        return CheckpointFile(path_text, None, "", f"file not found: {path.name}", {})
    try:
        state = load_checkpoint(path, mmap=True)
    except (ValueError, OSError, RuntimeError) as exc:
        return CheckpointFile(path_text, None, "", short_message(str(exc), [path, path_text]), {})
    shapes = {
        key: torch.empty(tuple(value.shape), device="meta")
        for key, value in state.items()
        if hasattr(value, "shape")
    }
    del state  # let go of the mapped file
    return CheckpointFile(
        path_text, identify_checkpoint(shapes), describe_state_dict(shapes), None, shapes
    )
