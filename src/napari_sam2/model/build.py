"""`build_sam2`: a SAM 2 network from a name or config, with official weights loaded strictly,
and the checks that say which model a state dict belongs to."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .config import FINE_TUNES, MODEL_NAMES, SAM2Config, split_sized_name
from .sam2 import SAM2Model

_TRUNK_BY_POS_EMBED = {(96, 7): ("tiny", "small"), (112, 14): ("base_plus",), (144, 7): ("large",)}
_BLOCKS = {"tiny": 12, "small": 16, "base_plus": 24, "large": 48}


def build_sam2(
    name_or_config: str | SAM2Config,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> SAM2Model:
    """Build a SAM 2 network in eval mode.

    name_or_config: one of `MODEL_NAMES`, of the registered fine-tunes `FINE_TUNE_NAMES`
        (their architecture and resolution: `SAM2Config.from_name`), either with a size
        suffix for another resolution (``"sam2.1_hiera_tiny@512"``), or a `SAM2Config`.
    checkpoint: path to an official `.pt` file (a dict with key "model"), a state dict, or
        what ``torch.load`` reads from such a file (that dict). With a name and no checkpoint
        the weights of that name come from the weights store (downloaded once; a size suffix
        runs the same weights at another resolution); with a config and no checkpoint the
        weights are random.
    device: where the model lives; must be available.
    """
    device = _check_device(device)
    if isinstance(name_or_config, SAM2Config):
        config = name_or_config
    elif isinstance(name_or_config, str):
        config = SAM2Config.from_name(name_or_config)
        if checkpoint is None:
            from napari_sam2.weights import ensure_checkpoint

            # parameters do not depend on the resolution: "<name>@<size>" uses name's weights
            weights_name, _ = split_sized_name(name_or_config)
            checkpoint = ensure_checkpoint(weights_name, progress=None)
    else:
        raise TypeError(
            f"name_or_config must be a model name or a SAM2Config, not {type(name_or_config)}"
        )
    model = SAM2Model(config)
    if checkpoint is not None:
        state = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
        if "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]  # an official file's contents, as torch.load gives them
        check_state_dict(state, model, config)
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} requested, but CUDA is not available here; use 'cpu'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {device!r} requested, but only {torch.cuda.device_count()} CUDA devices exist"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} requested, but MPS is not available here; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'mps'")
    return dev


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint file (`{"model": state_dict}`).

    ``mmap=True`` maps the tensors from the file instead of reading them (a zip-format file, as
    ``torch.save`` writes by default; other files are read): cheap when only the names and
    shapes are wanted, as by :func:`identify_checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        obj = _torch_load(path, mmap)
    except (OSError, MemoryError):
        raise  # an unreadable file or too little memory: those errors say so themselves
    except Exception as err:
        # torch's unpickler fails on foreign bytes with whatever it trips over (IndexError,
        # KeyError, UnpicklingError, RuntimeError, EOFError, ...): say what the file is instead.
        from napari_sam2.weights import checkpoint_file_problem

        try:
            problem = checkpoint_file_problem(path)
        except OSError:
            problem = None
        if problem is None:
            detail = (str(err).strip().splitlines() or [""])[0][:200]
            problem = f"torch cannot read it, it may be damaged: {type(err).__name__}: {detail}"
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({problem}): give the .pt file of an "
            "official SAM 2 checkpoint (download it again if this copy is damaged)"
        ) from None
    if not isinstance(obj, Mapping) or "model" not in obj:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is not an official SAM 2 checkpoint: expected a dict with key 'model', "
            f"found {keys}"
        )
    state = obj["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: 'model' entry is not a state dict")
    return dict(state)


def _torch_load(path: Path, mmap: bool) -> object:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass  # not a zip-format file (mmap needs one): read it as a whole below
    return torch.load(path, map_location="cpu", weights_only=True)


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """What an (official) state dict looks like: model size and SAM version."""
    pos = state.get("image_encoder.trunk.pos_embed")
    if pos is None or getattr(pos, "ndim", 0) != 4:
        return "a state dict without image_encoder.trunk.pos_embed (not a SAM 2 model)"
    blocks = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k)) is not None
    }
    n_blocks = len(blocks)
    version = "2.1" if "no_obj_embed_spatial" in state else "2.0"
    sizes = _TRUNK_BY_POS_EMBED.get((int(pos.shape[1]), int(pos.shape[2])), ())
    size = next((s for s in sizes if _BLOCKS[s] == n_blocks), None)
    if size is None:
        return (
            f"an unknown SAM {version} model (trunk pos_embed {tuple(pos.shape)}, "
            f"{n_blocks} trunk blocks)"
        )
    prefix = "sam2.1" if version == "2.1" else "sam2"
    return f"{prefix}_hiera_{size} (SAM {version})"


def check_state_dict(
    state: Mapping[str, torch.Tensor], model: SAM2Model, config: SAM2Config
) -> None:
    """Raise a ValueError saying what the state dict looks like if it does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return
    want = _requested(config)
    got = describe_state_dict(state)
    details = []
    if missing:
        details.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        details.append(
            f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} instead of "
            f"{tuple(expected[k].shape)})"
        )
    raise ValueError(
        f"this checkpoint looks like {got}, but {want} was requested: "
        f"{'; '.join(details)} entries. Pass the checkpoint that matches the model name."
    )


def _requested(config: SAM2Config) -> str:
    """How an error names the requested model: a fine-tune or resolution says its architecture
    (that is what the shapes are compared with)."""
    version = f"SAM {config.sam_version}"
    if config.name in MODEL_NAMES:
        return f"{config.name} ({version})"
    try:
        model, _ = split_sized_name(config.name)
    except ValueError:
        model = config.name
    base = FINE_TUNES[model].base if model in FINE_TUNES else model
    if base in MODEL_NAMES:
        return f"{config.name} ({version}: {base} at {config.image_size} px)"
    return f"the configuration {config.name!r} ({version})"


def identify_checkpoint(state: Mapping[str, torch.Tensor]) -> str | None:
    """The official model whose parameters ``state`` has, by name and shape, or None.

    The shapes decide: SAM 2.0 and 2.1 differ in keys (2.1 adds ``no_obj_embed_spatial`` and
    the temporal projection of object pointers), tiny and small in the number of trunk blocks,
    base_plus and large in the trunk's position embedding. A name is given only where the state
    dict has exactly the keys and shapes of that one model; anything else (a custom
    configuration, a fine-tune of another size, a partial or damaged dict) gives None, and the
    caller has to say which model the weights belong to. A fine-tune that keeps an official
    architecture is recognised as that architecture: checkpoints do not record the image size
    or training, only parameters. So a MedSAM2 checkpoint is named ``sam2.1_hiera_tiny``; it
    runs at its 512 px when built under its fine-tune name (``build_sam2("medsam2_latest",
    checkpoint=...)``) or with ``SAM2Config.from_name("sam2.1_hiera_tiny", image_size=512)``.
    """
    shapes = _shapes_of(state)
    if shapes is None:
        return None
    described = describe_state_dict(state).split(" ", 1)[0]
    if described not in MODEL_NAMES:
        return None
    return described if _official_shapes(described) == shapes else None


def state_dict_mismatch(state: Mapping[str, torch.Tensor], config: SAM2Config) -> str | None:
    """Why ``state`` cannot be loaded into a network of ``config`` (None: it fits exactly).

    Cheap: the network is built on the meta device, without memory for its parameters.
    """
    with torch.device("meta"):
        model = SAM2Model(config)
    try:
        check_state_dict(state, model, config)
    except ValueError as err:
        return str(err)
    return None


def _shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]] | None:
    shapes = {}
    for key, value in state.items():
        shape = getattr(value, "shape", None)
        if not isinstance(key, str) or shape is None:
            return None
        shapes[key] = tuple(int(n) for n in shape)
    return shapes


@functools.cache
def _official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        model = SAM2Model(SAM2Config.from_name(name))
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
