"""The registered checkpoints, Meta's SAM 2 files and the fine-tunes: URLs, checksums, sizes."""

from __future__ import annotations

from dataclasses import dataclass

_SIZES = ("tiny", "small", "base_plus", "large")
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM20_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM21_SHA256 = {
    "tiny": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
    "small": "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
    "base_plus": "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    "large": "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
}


@dataclass(frozen=True)
class CheckpointInfo:
    """One registered checkpoint: an official SAM 2 file or a fine-tune of an official model.

    ``sha256`` is None where no checksum is published (SAM 2.0, the fine-tunes): such files are
    verified by loading them with torch, and the sha256 measured then is kept beside the file.
    ``base`` is the official architecture a fine-tune has the parameters of (None: the entry is
    that architecture itself), ``image_size`` the input size the weights were trained at.
    ``size_bytes`` is the approximate download size, for messages and the model lists.
    """

    name: str
    url: str
    sha256: str | None
    version: str
    base: str | None = None
    image_size: int = 1024
    size_bytes: int | None = None
    licence: str = ""
    source: str = ""
    description: str = ""
    file_name: str | None = None
    """The published file name, where the URL does not end with it."""
    aliases: tuple[str, ...] = ()
    """Other names the file is found by in a ``$NAPARI_SAM2_WEIGHTS`` folder."""
    recommended: bool = False

    @property
    def filename(self) -> str:
        return self.file_name or self.url.rsplit("/", 1)[-1]

    @property
    def architecture(self) -> str:
        """The official model whose parameters the file holds."""
        return self.base or self.name

    @property
    def fine_tune(self) -> bool:
        return self.base is not None

    def title(self) -> str:
        """What the entry is, in words: ``"MedSAM2 (bowang-lab): latest release
        (recommended)"``, ``"SAM 2.1 tiny"``."""
        text = f"{self.source}: {self.description}" if self.fine_tune else self.description
        return text + (" (recommended)" if self.recommended else "")

    def summary(self) -> str:
        """The facts for lists and tooltips: download size, licence, input size (and the
        architecture of a fine-tune); :meth:`title` says what it is and where it comes from."""
        parts = []
        if self.size_bytes is not None:
            parts.append(f"~{round(self.size_bytes / _MB)} MB")
        if self.licence:
            parts.append(self.licence)
        parts.append(f"{self.image_size} px")
        if self.fine_tune:
            parts.append(f"{self.base} weights")
        return " · ".join(parts)


_MB = 10**6
# Approximate download sizes of Meta's files (SAM 2.0 and 2.1 differ by a few kB).
_SIZE_BYTES = {"tiny": 156 * _MB, "small": 185 * _MB, "base_plus": 324 * _MB, "large": 898 * _MB}
_SAM2_LICENCE = "Apache-2.0"


def _build_registry() -> dict[str, CheckpointInfo]:
    registry = {}
    for size in _SIZES:
        name = f"sam2.1_hiera_{size}"
        registry[name] = CheckpointInfo(
            name,
            f"{_SAM21_BASE}/{name}.pt",
            _SAM21_SHA256[size],
            "2.1",
            size_bytes=_SIZE_BYTES[size],
            licence=_SAM2_LICENCE,
            source="Meta",
            description=f"SAM 2.1 {size} (Meta)",
        )
    for size in _SIZES:
        name = f"sam2_hiera_{size}"
        registry[name] = CheckpointInfo(
            name,
            f"{_SAM20_BASE}/{name}.pt",
            None,
            "2.0",
            size_bytes=_SIZE_BYTES[size],
            licence=_SAM2_LICENCE,
            source="Meta",
            description=f"SAM 2.0 {size} (Meta)",
        )
    return registry


# MedSAM2 (bowang-lab): SAM 2.1 tiny fine-tuned on 3D medical images and videos at 512 px. The
# model card publishes no sha256: verified by loading, as SAM 2.0 files are.
_MEDSAM2_BASE = "https://huggingface.co/wanglab/MedSAM2/resolve/main"
_MEDSAM2 = (
    ("medsam2_latest", "MedSAM2_latest.pt", "latest release", True),
    ("medsam2_2411", "MedSAM2_2411.pt", "November 2024 release", False),
    ("medsam2_ct_lesion", "MedSAM2_CTLesion.pt", "CT lesions", False),
    (
        "medsam2_mri_liver_lesion",
        "MedSAM2_MRI_LiverLesion.pt",
        "liver lesions in MRI",
        False,
    ),
    ("medsam2_us_heart", "MedSAM2_US_Heart.pt", "heart ultrasound", False),
)
# micro-sam's generalist light-microscopy SAM 2 (SAM 2.1 tiny at 1024 px). The URL is the one
# micro-sam's own registry names (micro_sam/v2/util.py, FINETUNED_URLS["hvit_t_cells"]); it
# publishes an xxh128 hash, not a sha256, so the file is verified by loading. Its file holds
# {"model": state_dict, "model_type": ...}; micro-sam caches it without a suffix, under its
# model name, hence the alias.
_MICRO_SAM_URL = "https://owncloud.gwdg.de/index.php/s/iqNv2cjhPMGOo9J/download"


def _build_fine_tunes() -> dict[str, CheckpointInfo]:
    registry = {}
    for name, filename, description, recommended in _MEDSAM2:
        registry[name] = CheckpointInfo(
            name,
            f"{_MEDSAM2_BASE}/{filename}",
            None,
            "2.1",
            base="sam2.1_hiera_tiny",
            image_size=512,
            size_bytes=156 * _MB,
            licence="CC-BY-SA-4.0",
            source="MedSAM2 (bowang-lab)",
            description=description,
            recommended=recommended,
        )
    registry["micro_sam_hvit_t_cells"] = CheckpointInfo(
        "micro_sam_hvit_t_cells",
        _MICRO_SAM_URL,
        None,
        "2.1",
        base="sam2.1_hiera_tiny",
        image_size=1024,
        size_bytes=156 * _MB,
        licence="CC-BY-4.0",
        source="micro-sam (computational-cell-analytics)",
        description="cells in light microscopy",
        file_name="hvit_t_cells.pt",
        aliases=("hvit_t_cells",),
    )
    return registry


MODEL_REGISTRY: dict[str, CheckpointInfo] = _build_registry()
"""The official SAM 2 checkpoints (Meta's files)."""
FINE_TUNES: dict[str, CheckpointInfo] = _build_fine_tunes()
"""Registered fine-tunes of official architectures, in the official file format."""
FINE_TUNE_NAMES: tuple[str, ...] = tuple(FINE_TUNES)
CHECKPOINT_NAMES: tuple[str, ...] = (*MODEL_REGISTRY, *FINE_TUNES)
"""Every registered name: the official checkpoints, then the fine-tunes."""
