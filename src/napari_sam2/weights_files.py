"""Checks of checkpoint files on disk: what a file is, its sha256, the record kept beside it."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

_CHUNK = 1 << 20
_SIDECAR_SUFFIX = ".sha256"
# torch's legacy (non-zip) format starts with this number pickled; with protocol 0 or 1 the
# pickle is ASCII, so it must not be taken for a text file.
_LEGACY_TORCH_MAGIC_TEXT = b"L119547037146038801333356"


def checkpoint_file_problem(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` cannot be a PyTorch checkpoint, or None if it may be one.

    A cheap look at its bytes (the first few hundred; for a zip archive its directory at the
    end), without torch: for errors that say what the file is instead of what torch tripped
    over. The answer reads like "it is a text file" or "it is a truncated zip archive ...".
    None does not promise a loadable checkpoint, only that nothing plainly wrong was seen.
    Raises OSError when the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):  # torch's own format since 1.6 is a zip archive
        return _zip_problem(path)
    if head.startswith(b"\x80") or head.startswith(_LEGACY_TORCH_MAGIC_TEXT):
        return None  # a pickle, as torch's legacy format is
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (Keras or TensorFlow weights?)"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: decompress it first"
    if _is_safetensors(head, size):
        return "it is a safetensors file (e.g. from Hugging Face transformers), not a .pt file"
    text = _as_text(head)
    if text is not None:
        start = text.lstrip().lower()
        if start.startswith("version https://git-lfs"):
            return "it is a Git LFS pointer, not the file itself: fetch it with `git lfs pull`"
        if start.startswith(("<!doctype html", "<html")) or "<html" in start[:300]:
            return "it is an HTML page (an error or login page saved instead of the file?)"
        return "it is a text file"
    return None  # some other binary: torch decides


def _zip_problem(path: Path) -> str | None:
    # A zip archive's directory is at its end: a cut-off copy has none.
    if not zipfile.is_zipfile(path):
        return "it is a truncated or damaged zip archive (its end is missing): copy it again"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        return "it is a damaged zip archive: copy it again"
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "it is a zip archive, but not one written by torch (no data.pkl inside)"
    return None


def _is_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then the JSON header itself
    if len(head) < 10:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + header_length <= size


def _as_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of the sample
            return None
        text = head[: error.start].decode("utf-8")
    if all(char.isprintable() or char in "\t\n\r\f\v" for char in text):
        return text
    return None


def _quiet_problem(path: Path) -> str | None:
    try:
        return checkpoint_file_problem(path)
    except OSError:
        return None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _loads_as_checkpoint(path: Path) -> bool:
    import torch

    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: mmap is impossible, read it plainly
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    model = content.get("model") if isinstance(content, dict) else None
    return (
        isinstance(model, dict)
        and len(model) > 0
        and all(isinstance(value, torch.Tensor) for value in model.values())
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def _read_sidecar(path: Path) -> str | None:
    try:
        return json.loads(_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_sidecar(path: Path, digest: str) -> None:
    try:
        _sidecar(path).write_text(json.dumps({"sha256": digest}))
    except OSError:
        pass  # a read-only folder of the user's: the file stays usable, just checked again


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
