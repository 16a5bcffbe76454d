"""The installed distribution: metadata napari and the napari hub read, and the manifest."""

from __future__ import annotations

import subprocess
import sys
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
    assert [w.command for w in contributions.writers] == ["napari-sam2.write_labels"]
    assert {s.key for s in contributions.sample_data} == {"dividing_cells", "blob_volume"}
    assert [w.command for w in contributions.widgets] == ["napari-sam2.tracking_widget"]


def test_packaged_manifest_is_the_top_level_one():
    packaged = resources.files("napari_sam2") / "napari.yaml"
    content = yaml.safe_load(packaged.read_text())
    assert content["name"] == "napari-sam2"
    if (REPO_ROOT / "napari.yaml").is_file():
        assert packaged.read_text() == (REPO_ROOT / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_contains_the_manifest_as_a_real_file(tmp_path):
    if not (REPO_ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout: there is no pyproject.toml to build a wheel from")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), REPO_ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("napari_sam2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("napari_sam2/napari.yaml")
        assert not (info.external_attr >> 16) & 0o170000 == 0o120000  # not a symlink entry
        manifest = yaml.safe_load(archive.read(info))
        names = archive.namelist()
    assert manifest["name"] == "napari-sam2"
    for module in ("weights.py", "_reader.py", "_writer.py", "_sample_data.py"):
        assert f"napari_sam2/{module}" in names


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
    assert result.stdout.strip() == 'pip install -e ".[testing,pyqt5]" && python -m pytest'
