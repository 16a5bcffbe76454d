"""The run record (``run.json``): what a set of outputs came from, written last beside them."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_sam2.cli_outputs import Outputs


def _file_facts(path: Path) -> dict[str, Any]:
    """Path, size and modification time of an input, for the run record."""
    facts: dict[str, Any] = {"path": str(path.expanduser().absolute())}
    try:
        stat = path.stat()
    except OSError:
        return facts
    if path.is_file():
        facts["bytes"] = stat.st_size
    facts["modified"] = _iso(stat.st_mtime)
    return facts


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """What a set of outputs came from, written last beside them (``run.json``).

    A set whose record is missing or says ``"complete": false`` is not the finished result of
    one run: the run was stopped, failed while writing, or was killed between two outputs
    (the previous record is removed before the first output is replaced).
    """

    run_id: str
    started: str
    argv: list[str]
    inputs: list[tuple[str, Path]] = field(default_factory=list)

    @classmethod
    def begin(cls, argv: Sequence[str]) -> RunRecord:
        now = time.time()
        run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{os.getpid()}-"
        return cls(run_id + secrets.token_hex(3), _iso(now), list(argv))

    def write(self, outputs: Outputs, args: argparse.Namespace, **state: Any) -> None:
        """Write the record atomically (``state``: frames, frames_written, complete, ...)."""
        from napari_sam2 import __version__
        from napari_sam2.outputs import write_text_atomically

        options = {
            k: v
            for k, v in vars(args).items()
            if k not in ("command", "stack", "prompts", "out", "argv")
        }
        written = {}
        for fmt, path in outputs.paths.items():
            if path.exists():
                # the name only: the set of outputs can be moved as a whole
                written[fmt] = {**_file_facts(path), "path": path.name}
        record = {
            "napari_sam2_run": 1,
            "run_id": self.run_id,
            "version": __version__,
            "started": self.started,
            "finished": _iso(time.time()),
            "command": ["napari-sam2", *self.argv],
            "inputs": [{"role": what, **_file_facts(path)} for what, path in self.inputs],
            "options": options,
            "outputs": written,
            **state,
        }
        write_text_atomically(outputs.record, json.dumps(record, indent=1, default=str) + "\n")
