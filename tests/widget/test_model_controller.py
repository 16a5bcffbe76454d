"""The widget's model controller, without Qt: the choice, the state line, loading, downloading.

Downloads go to a private cache from an HTTP server on 127.0.0.1, or to a port where nothing
listens (offline); never to the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from napari_sam2.weights import CACHE_ENV, MODEL_REGISTRY, WEIGHTS_ENV
from napari_sam2.widget.model_controller import (
    SUMMARY_LIMIT,
    ModelController,
    ModelError,
    ModelRequest,
    short_message,
)
from official_checkpoints import official_checkpoint

NAME = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def tiny20(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2_hiera_tiny")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private, empty weights cache; no offline folder; no proxy that could take 127.0.0.1."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    return tmp_path / "cache"


def point_registry_at(monkeypatch, url: str, sha256: str | None = None) -> str:
    info = dataclasses.replace(MODEL_REGISTRY[NAME], url=url, sha256=sha256 or "0" * 64)
    monkeypatch.setitem(MODEL_REGISTRY, NAME, info)
    return url


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/checkpoints/{NAME}.pt"


@pytest.fixture
def served():
    """Serve ``files[name] = bytes`` from 127.0.0.1; yields (files, base URL)."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = files.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = httpd.server_address[:2]
    yield files, f"http://{host}:{port}/files"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_official_name_needs_download_then_is_cached(cache):
    controller = ModelController()
    assert controller.name == NAME and controller.device == "auto"
    assert controller.status() == "needs download" and controller.can_download()
    assert controller.key() == (NAME, "auto", NAME)
    cache.mkdir()
    (cache / f"{NAME}.pt").write_bytes(b"weights")
    assert controller.status() == "cached" and not controller.can_download()


def test_a_file_of_an_official_model_is_recognised_and_the_choice_follows(cache, tiny20):
    controller = ModelController()
    assert controller.set_checkpoint(f"  {tiny20}  ") == "sam2_hiera_tiny"
    assert controller.name == "sam2_hiera_tiny" and controller.checkpoint == str(tiny20)
    assert controller.status() == "file: recognised as sam2_hiera_tiny"
    assert str(tiny20) in controller.detail() and "SAM 2.0" in controller.detail()
    assert controller.key() == (str(tiny20), "auto", "sam2_hiera_tiny")
    assert not controller.can_download()  # a file needs no download
    # the same file again: nothing to switch
    assert controller.set_checkpoint(str(tiny20)) is None
    controller.set_checkpoint("")
    assert controller.checkpoint is None and controller.status() == "needs download"


def test_file_and_choice_disagree(cache, tiny20):
    controller = ModelController()
    controller.set_checkpoint(str(tiny20))
    controller.choose("sam2.1_hiera_small")
    expected = (
        f"{tiny20.name} holds sam2_hiera_tiny, not sam2.1_hiera_small: "
        "choose sam2_hiera_tiny or another file"
    )
    assert controller.status() == expected
    with pytest.raises(ModelError) as error:
        controller.load()
    assert error.value.summary == expected == str(error.value)
    assert str(tiny20) in error.value.detail  # the full path is in the detail
    request = controller.request()
    controller.begin_load(request)
    controller.record_failure("load", request, error.value)
    assert controller.loading is None
    assert controller.status() == f"load failed: {expected}"
    assert controller.detail() == error.value.detail
    controller.choose("sam2_hiera_tiny")  # another choice: the failure no longer applies
    assert controller.status() == "file: recognised as sam2_hiera_tiny"


def test_loading_an_official_file_and_describing_it(cache, tiny20):
    controller = ModelController()
    controller.set_checkpoint(str(tiny20))
    controller.set_device("cpu")
    model = controller.load()
    assert model.config.name == "sam2_hiera_tiny" and not model.training
    saved = torch.load(tiny20, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["no_obj_ptr"], saved["no_obj_ptr"])
    assert controller.loaded is None  # the worker changes nothing; the GUI thread records
    controller.begin_load(controller.request())
    assert controller.status() == "loading sam2_hiera_tiny…"
    controller.record_loaded(controller.request(), model)
    assert controller.loading is None
    assert controller.describe_loaded() == f"sam2_hiera_tiny · {tiny20} · cpu · float32"
    assert controller.status() == f"loaded: sam2_hiera_tiny · {tiny20.name} · cpu · float32"
    assert controller.load() is model  # kept in memory for the same request
    controller.set_device("auto")  # another request: the state line says what it would take
    assert controller.status() == "file: recognised as sam2_hiera_tiny"


def test_a_custom_size_file_needs_its_model(cache, small_config, small_checkpoint):
    controller = ModelController()
    assert controller.set_checkpoint(str(small_checkpoint)) is None  # no official model
    status = controller.status()
    assert status.startswith(f"{small_checkpoint.name} is not {NAME}: it holds an unknown SAM 2.1")
    with pytest.raises(ModelError, match="an unknown SAM 2.1 model"):
        controller.load()
    controller.use_model(small_config, "small (test)")
    assert controller.names()[-1] == "small (test)" and controller.name == "small (test)"
    assert controller.status() == "file: fits small (test)"
    controller.set_device("cpu")
    model = controller.load()
    saved = torch.load(small_checkpoint, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    controller.record_loaded(controller.request(), model)
    assert controller.status() == f"loaded: small (test) · {small_checkpoint.name} · cpu · float32"
    # without the file the configuration has no weights
    controller.set_checkpoint(None)
    assert controller.status() == "needs a checkpoint file"
    with pytest.raises(ModelError, match="needs a checkpoint file"):
        controller.load()


def test_a_model_in_memory(cache, small_config, small_checkpoint):
    from napari_sam2.model import build_sam2

    module = build_sam2(small_config, checkpoint=small_checkpoint)
    controller = ModelController()
    controller.use_model(module, "mine")
    assert controller.status() == "in memory" and not controller.can_download()
    assert controller.load() is module
    controller.record_loaded(controller.request(), module)
    assert controller.describe_loaded() == "mine · in memory · cpu · float32"
    with pytest.raises(ValueError, match="official model's name"):
        controller.use_model(module, NAME)


def test_missing_file(cache, tmp_path):
    controller = ModelController()
    missing = tmp_path / "gone" / "weights.pt"
    controller.set_checkpoint(str(missing))
    assert controller.status() == "file not found: weights.pt"
    with pytest.raises(ModelError) as error:
        controller.load()
    assert "does not exist" in error.value.summary and str(missing) in error.value.detail


def test_offline_download_fails_with_a_short_summary_and_can_be_retried(cache, monkeypatch):
    url = point_registry_at(monkeypatch, refused_url())
    controller = ModelController()
    name = controller.begin_download()
    assert name == NAME and controller.status() == f"downloading {NAME}…"
    assert not controller.can_download()
    with pytest.raises(ModelError) as error:
        controller.download(name)
    summary = error.value.summary
    assert "\n" not in summary and len(summary) <= SUMMARY_LIMIT and url not in summary
    assert summary.startswith(f"cannot download {NAME}") and "no network connection" in summary
    assert url in error.value.detail and WEIGHTS_ENV in error.value.detail
    controller.finish_download(error.value)
    assert controller.status() == f"download failed: {summary}"
    assert controller.detail() == error.value.detail
    assert controller.downloading is None and controller.can_download()  # try again


def test_download_with_progress_then_cached(cache, monkeypatch, served):
    files, base = served
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}}, buffer)
    files[f"{NAME}.pt"] = data = buffer.getvalue()
    point_registry_at(monkeypatch, f"{base}/{NAME}.pt", hashlib.sha256(data).hexdigest())
    controller = ModelController()
    seen = []
    path = controller.download(controller.begin_download(), lambda d, t: seen.append((d, t)))
    assert path == cache / f"{NAME}.pt" and path.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    controller.finish_download(None)
    assert controller.status() == "cached" and not controller.can_download()


def test_session_keys_map_back_to_requests(cache, tiny20):
    controller = ModelController()
    assert controller.request_for_key((NAME, "cpu")) == ModelRequest(NAME, None, "cpu")
    controller.set_checkpoint(str(tiny20))
    assert controller.request_for_key(controller.key()) == controller.request()
    assert controller.request() == ModelRequest("sam2_hiera_tiny", str(tiny20), "auto")
    assert controller.request_for_key((str(tiny20), "cpu")) == ModelRequest(
        "sam2_hiera_tiny", str(tiny20), "cpu"
    )
    key = controller.key()
    controller.choose("sam2.1_hiera_small")  # another model for the same file: another session
    assert controller.key() != key
    assert controller.request_for_key(key) == ModelRequest("sam2_hiera_tiny", str(tiny20), "auto")


def test_short_message():
    text = (
        "cannot download x ([Errno 111] Connection refused): no network connection to "
        "http://127.0.0.1:9/x.pt? To install it by hand, download https://a/x.pt. Or else."
    )
    assert short_message(text) == (
        "cannot download x ([Errno 111] Connection refused): no network connection?"
    )
    assert short_message("the file /a/b/c.pt is bad. Really.", ["/a/b/c.pt"]) == (
        "the file c.pt is bad"
    )
    assert short_message("x" * 300).endswith("…") and len(short_message("x" * 300)) == 110
    assert short_message("first line\nsecond line") == "first line"
