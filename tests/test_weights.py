"""The weights layer against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from file_server import FileServer
from napari_sam2 import weights
from napari_sam2.weights import (
    CACHE_ENV,
    MODEL_REGISTRY,
    WEIGHTS_ENV,
    WeightsError,
    cache_dir,
    checkpoint_info,
    checkpoint_status,
    ensure_checkpoint,
)

NAME = "sam2.1_hiera_tiny"
OLD_NAME = "sam2_hiera_tiny"


def make_checkpoint(seed: int = 0) -> bytes:
    """A small file in the official format: ``{"model": state_dict}`` saved by torch."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.randn(8, 3, 7, 7, generator=generator),
        "sam_mask_decoder.iou_token.weight": torch.randn(1, 16, generator=generator),
        "maskmem_tpos_enc": torch.randn(7, 1, 1, 4, generator=generator),
    }
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue()


@pytest.fixture
def env(weights_env) -> Path:
    """The test's own weights store (``weights_env`` in conftest.py)."""
    return weights_env


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def serve(server: FileServer, monkeypatch, name: str = NAME, data: bytes | None = None, sha=True):
    """Put a checkpoint on the server and point the registry entry ``name`` at it."""
    data = make_checkpoint() if data is None else data
    info = MODEL_REGISTRY[name]
    server.files[info.filename] = data
    digest = hashlib.sha256(data).hexdigest() if sha is True else sha
    patched = dataclasses.replace(info, url=server.url(info.filename), sha256=digest)
    monkeypatch.setitem(MODEL_REGISTRY, name, patched)
    return data, patched


def refused_url(filename: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"


def test_registry_lists_the_eight_official_checkpoints():
    assert len(MODEL_REGISTRY) == 8
    for size in ("tiny", "small", "base_plus", "large"):
        new = checkpoint_info(f"sam2.1_hiera_{size}")
        assert new.url == (
            f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"
        )
        assert len(new.sha256) == 64 and int(new.sha256, 16) >= 0
        old = checkpoint_info(f"sam2_hiera_{size}")
        assert old.url.endswith(f"/072824/sam2_hiera_{size}.pt")
        assert old.sha256 is None and old.version == "2.0"
    assert checkpoint_info(NAME).sha256.startswith("7402e0d8")
    with pytest.raises(WeightsError, match="unknown checkpoint 'sam3'.*sam2.1_hiera_tiny"):
        checkpoint_info("sam3")


def test_cache_dir_follows_platform_and_env(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == Path(user_cache_dir("napari-sam2", appauthor=False))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_good_download_reports_progress_and_is_cached(env, server, monkeypatch):
    data, info = serve(server, monkeypatch)
    assert checkpoint_status(NAME) == "needs download"
    calls = []
    path = ensure_checkpoint(NAME, progress=lambda done, total: calls.append((done, total)))
    assert path == env / "cache" / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == data
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert not list((env / "cache").glob("*.part"))
    assert checkpoint_status(NAME) == "cached"
    # A verified cache entry is used without asking the server again.
    assert ensure_checkpoint(NAME) == path
    assert len(server.requests) == 1


def test_checksum_mismatch_is_rejected_and_cache_unchanged(env, server, monkeypatch):
    serve(server, monkeypatch, sha="0" * 64)
    with pytest.raises(WeightsError, match="corrupt.*cache is unchanged"):
        ensure_checkpoint(NAME)
    assert list((env / "cache").iterdir()) == []
    assert checkpoint_status(NAME) == "needs download"


def test_interrupted_download_resumes_with_a_range_request(env, server, monkeypatch):
    data, info = serve(server, monkeypatch)
    server.cut_next = 1
    with pytest.raises(WeightsError, match="interrupted.*next attempt resumes"):
        ensure_checkpoint(NAME, attempts=1)
    part = env / "cache" / "sam2.1_hiera_tiny.pt.part"
    assert part.stat().st_size == len(data) // 2
    assert not (env / "cache" / "sam2.1_hiera_tiny.pt").exists()

    calls = []
    path = ensure_checkpoint(NAME, progress=lambda d, t: calls.append((d, t)), attempts=1)
    assert path.read_bytes() == data
    assert server.requests[-1]["range"] == f"bytes={len(data) // 2}-"
    assert calls[0] == (len(data) // 2, len(data)) and calls[-1] == (len(data), len(data))
    assert not part.exists()


def test_interruption_is_retried_within_one_call(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    server.cut_next = 2
    assert ensure_checkpoint(NAME, attempts=3).read_bytes() == data
    assert len(server.requests) == 3


def test_connection_dropped_before_the_answer_is_retried(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    server.drop_next = 1
    assert ensure_checkpoint(NAME, attempts=2).read_bytes() == data
    assert len(server.requests) == 2


def test_restarts_cleanly_when_the_server_ignores_ranges(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    server.support_range = False
    server.cut_next = 1
    assert ensure_checkpoint(NAME, attempts=2).read_bytes() == data
    assert server.requests[-1]["range"] is not None  # asked, got the whole file, started over


def test_stale_partial_file_from_another_version_is_replaced(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    (env / "cache").mkdir()
    stale = make_checkpoint(seed=7)[: len(data) // 3]
    (env / "cache" / "sam2.1_hiera_tiny.pt.part").write_bytes(stale)
    assert ensure_checkpoint(NAME).read_bytes() == data
    assert server.requests[0]["range"] is not None and server.requests[1]["range"] is None


def test_cancelling_through_progress_keeps_the_partial_file(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done > 0:
            raise Cancelled

    big = data + b"\0" * (3 << 20)  # several chunks, so the cancel lands mid-file
    serve(server, monkeypatch, data=big)
    with pytest.raises(Cancelled):
        ensure_checkpoint(NAME, progress=cancel)
    part = env / "cache" / "sam2.1_hiera_tiny.pt.part"
    assert 0 < part.stat().st_size < len(big)
    assert ensure_checkpoint(NAME).read_bytes() == big


def test_404_names_the_url(env, server, monkeypatch):
    _, info = serve(server, monkeypatch)
    server.files.clear()
    with pytest.raises(WeightsError, match="404") as error:
        ensure_checkpoint(NAME)
    assert info.url in str(error.value)
    assert not (env / "cache" / "sam2.1_hiera_tiny.pt").exists()


def test_no_network_says_what_to_fetch_and_where_to_put_it(env, monkeypatch):
    info = dataclasses.replace(MODEL_REGISTRY[NAME], url=refused_url("sam2.1_hiera_tiny.pt"))
    monkeypatch.setitem(MODEL_REGISTRY, NAME, info)
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME, timeout=5)
    message = str(error.value)
    assert "cannot download" in message
    assert info.url in message
    assert str(env / "cache" / "sam2.1_hiera_tiny.pt") in message
    assert WEIGHTS_ENV in message


def test_local_file_given_by_path(env, tmp_path):
    path = tmp_path / "my_finetuned.pt"
    path.write_bytes(make_checkpoint())
    assert checkpoint_status(path) == "local file"
    assert checkpoint_status(str(path)) == "local file"
    assert ensure_checkpoint(str(path)) == path
    with pytest.raises(WeightsError, match="does not exist"):
        ensure_checkpoint(tmp_path / "missing.pt")


def test_damaged_copy_named_like_an_official_file_is_refused(env, tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_bytes(make_checkpoint())  # not Meta's file: its sha256 cannot match
    with pytest.raises(WeightsError, match="damaged or incomplete"):
        ensure_checkpoint(path)


def test_offline_folder_from_environment(env, tmp_path, monkeypatch):
    data = make_checkpoint()
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "sam2.1_hiera_tiny.pt").write_bytes(data)
    info = dataclasses.replace(
        MODEL_REGISTRY[NAME],
        url=refused_url("sam2.1_hiera_tiny.pt"),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    monkeypatch.setitem(MODEL_REGISTRY, NAME, info)
    monkeypatch.setenv(WEIGHTS_ENV, os.pathsep.join([str(tmp_path / "nothing"), str(folder)]))
    assert checkpoint_status(NAME) == "local file"
    assert ensure_checkpoint(NAME) == folder / "sam2.1_hiera_tiny.pt"
    (folder / "sam2.1_hiera_tiny.pt").write_bytes(data[:-10])
    with pytest.raises(WeightsError, match=f"{WEIGHTS_ENV}.*not an intact"):
        ensure_checkpoint(NAME)


def test_corrupt_cached_file_is_detected_and_replaced(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    path = ensure_checkpoint(NAME)
    path.write_bytes(data[: len(data) // 2] + b"garbage")
    assert ensure_checkpoint(NAME).read_bytes() == data
    assert len(server.requests) == 2


def test_sam20_file_is_checked_by_loading_and_then_by_recorded_sha256(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch, name=OLD_NAME, sha=None)
    path = ensure_checkpoint(OLD_NAME)
    assert path.read_bytes() == data
    sidecar = path.with_name(path.name + ".sha256")
    assert hashlib.sha256(data).hexdigest() in sidecar.read_text()
    # Damage that torch might not notice is still caught by the recorded checksum.
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert ensure_checkpoint(OLD_NAME).read_bytes() == data
    assert len(server.requests) == 2


def test_sam20_download_that_is_not_a_checkpoint_is_rejected(env, server, monkeypatch):
    serve(server, monkeypatch, name=OLD_NAME, data=b"<html>captive portal</html>", sha=None)
    with pytest.raises(WeightsError, match="corrupt"):
        ensure_checkpoint(OLD_NAME)
    assert list((env / "cache").iterdir()) == []


def test_downloads_go_through_the_http_proxy_from_the_environment(env, server, monkeypatch):
    data = make_checkpoint()
    server.files["sam2.1_hiera_tiny.pt"] = data
    # The host does not exist: only a proxy can answer, and ours is the local server.
    info = dataclasses.replace(
        MODEL_REGISTRY[NAME],
        url="http://checkpoints.invalid/segment_anything_2/sam2.1_hiera_tiny.pt",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    monkeypatch.setitem(MODEL_REGISTRY, NAME, info)
    host, port = server.httpd.server_address[:2]
    monkeypatch.setenv("http_proxy", f"http://{host}:{port}")
    assert ensure_checkpoint(NAME).read_bytes() == data
    assert server.requests[0]["path"] == info.url  # a proxy receives the absolute URL


def test_weights_layer_imports_no_gui_and_no_model():
    code = (
        "import sys, napari_sam2.weights\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PySide2', 'PySide6', 'torch') "
        "or m.startswith('napari_sam2.model')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_documents_the_environment_variables():
    assert CACHE_ENV in weights.__doc__ and WEIGHTS_ENV in weights.__doc__


def test_concurrent_requests_download_once(env, server, monkeypatch):
    """Two threads (or processes) asking for the same checkpoint share one download."""
    data, _ = serve(server, monkeypatch)
    real_download = weights._download
    started = threading.Event()

    def slow_download(*args, **kwargs):
        started.set()
        threading.Event().wait(0.3)  # the other caller arrives while this one downloads
        return real_download(*args, **kwargs)

    monkeypatch.setattr(weights, "_download", slow_download)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(ensure_checkpoint(NAME)))
    first.start()
    assert started.wait(5)
    results.append(ensure_checkpoint(NAME))  # waits for the lock, then finds the cache
    first.join(5)
    assert len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == data
    assert len(server.requests) == 1
    assert sorted(p.name for p in (env / "cache").iterdir()) == ["sam2.1_hiera_tiny.pt"]
