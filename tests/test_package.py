"""The installed distribution: metadata napari and the napari hub read, and the manifest."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_metadata_declares_a_napari_plugin():
    dist = metadata.distribution("napari-sam2")
    assert "Framework :: napari" in dist.metadata.get_all("Classifier")
    (entry_point,) = [ep for ep in dist.entry_points if ep.group == "napari.manifest"]
    assert entry_point.name == "napari-sam2"
    assert entry_point.value == "napari_sam2:napari.yaml"


def test_manifest_loads_from_the_distribution():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("napari-sam2")
    assert manifest.name == "napari-sam2"
    contributions = manifest.contributions
    assert [r.command for r in contributions.readers] == ["napari-sam2.get_reader"]
    assert [w.command for w in contributions.writers] == [
        "napari-sam2.write_labels",
        "napari-sam2.write_labels_nifti",
    ]
    assert {s.key for s in contributions.sample_data} == {"dividing_cells", "blob_volume"}
    assert [w.command for w in contributions.widgets] == ["napari-sam2.tracking_widget"]


def test_packaged_manifest_is_the_top_level_one():
    packaged = resources.files("napari_sam2") / "napari.yaml"
    content = yaml.safe_load(packaged.read_text())
    assert content["name"] == "napari-sam2"
    if (REPO_ROOT / "napari.yaml").is_file():
        assert packaged.read_text() == (REPO_ROOT / "napari.yaml").read_text()


def test_version_is_set_in_one_place():
    import napari_sam2

    assert metadata.version("napari-sam2") == napari_sam2.__version__
    if (REPO_ROOT / "pyproject.toml").is_file():
        pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
        assert 'dynamic = ["version"]' in pyproject
        assert not re.search(r"^version\s*=", pyproject, flags=re.M)
        assert 'path = "src/napari_sam2/__init__.py"' in pyproject


def test_metadata_the_napari_hub_shows():
    dist = metadata.distribution("napari-sam2")
    meta = dist.metadata
    assert meta["Summary"] and "SAM 2" in meta["Summary"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta["Description"].lstrip().startswith("# napari-sam2")
    assert meta["License-Expression"] == "BSD-3-Clause"
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL"))
    assert {"Homepage", "Bug Tracker", "Documentation", "Source Code", "User Support"} <= set(urls)
    assert {"pyqt6", "pyqt5", "testing"} <= set(meta.get_all("Provides-Extra"))
    assert "pyqt6" in _extra_requirements(dist, "pyqt6")
    assert "pyqt6" not in _extra_requirements(dist, "testing")
    # the testing extra can build and check the distributions offline
    assert {"build", "hatchling", "twine"} <= _extra_requirements(dist, "testing")


def _extra_requirements(dist: metadata.Distribution, extra: str) -> set[str]:
    """Canonical names of what ``pip install .[extra]`` adds to the dependencies."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
            if not requirement.marker.evaluate({"extra": ""}):
                names.add(canonicalize_name(requirement.name))
    return names


def test_manifest_names_what_napari_and_the_hub_show():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("napari-sam2")
    assert manifest.display_name == "napari-sam2"
    (reader,) = manifest.contributions.readers
    assert set(reader.filename_patterns) == {"*.tif", "*.tiff", "*.nii", "*.nii.gz", "*.dcm"}
    assert reader.accepts_directories  # a DICOM series is a folder
    tiff, nifti = manifest.contributions.writers
    assert set(tiff.filename_extensions) == {".tif", ".tiff"}
    assert set(nifti.filename_extensions) == {".nii", ".nii.gz"}
    (widget,) = manifest.contributions.widgets
    assert widget.display_name == "SAM 2 tracking"  # Plugins > SAM 2 tracking (napari-sam2)


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """sdist, then the wheel built from that sdist, as a release would make them (offline)."""
    if not (REPO_ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout: there is no pyproject.toml to build from")
    pytest.importorskip("build", reason="the testing extra installs build")
    pytest.importorskip("hatchling", reason="the testing extra installs hatchling")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), REPO_ROOT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (sdist,) = tmp_path.glob("napari_sam2-*.tar.gz")
    (wheel,) = tmp_path.glob("napari_sam2-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_release_files_are_complete_and_pass_twine_check(tmp_path):
    import napari_sam2

    sdist, wheel = _build(tmp_path)
    version = napari_sam2.__version__
    assert sdist.name == f"napari_sam2-{version}.tar.gz"
    assert wheel.name.startswith(f"napari_sam2-{version}-")

    pytest.importorskip("twine", reason="the testing extra installs twine")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout

    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in ("LICENSE", "README.md", "CHANGELOG.md", "napari.yaml", "pyproject.toml"):
        assert name in names, name
    assert "src/napari_sam2/napari.yaml" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/")) or "__pycache__" in n]

    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("napari_sam2/napari.yaml")
        assert not (info.external_attr >> 16) & 0o170000 == 0o120000  # not a symlink entry
        manifest = yaml.safe_load(archive.read(info))
        wheel_names = archive.namelist()
        dist_info = f"napari_sam2-{version}.dist-info"
        wheel_metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert manifest["name"] == "napari-sam2"
    for module in ("__init__.py", "weights.py", "_reader.py", "_writer.py", "_sample_data.py"):
        assert f"napari_sam2/{module}" in wheel_names
    assert f"{dist_info}/licenses/LICENSE" in wheel_names
    assert f"Version: {version}" in wheel_metadata.splitlines()
    assert not [n for n in wheel_names if n.startswith("tests/")]


def test_ci_runs_exactly_the_readme_test_command():
    ci_script = REPO_ROOT / ".ci" / "run"
    if not ci_script.is_file():
        pytest.skip("not a source checkout: .ci/run is absent")
    # Source only the parsing function of .ci/run and let it read README.md as CI does.
    function = f"$(sed -n '/^readme_test_command()/,/^}}/p' {ci_script})"
    script = f'eval "{function}"; readme_test_command'
    result = subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'pip install -e ".[testing,pyqt6]" && python -m pytest'
