"""Demucs checkpoints: both file shapes load and match the reference network, nothing in a
file runs, bad files give one-line UserErrors, and pretrained downloads are verified and cached
(against a local HTTP server: the tests never reach the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pathlib
import pickle
import socket
import threading

import pytest
import torch

from asr_stream.denoisers.demucs import Demucs
from asr_stream.denoisers.demucs_checkpoint import (PRETRAINED, DemucsPlaceholder, fetch_pretrained,
                                                    load_demucs, read_checkpoint)
from asr_stream.errors import UserError
from conftest import SHARED, demo_clip, load_16k

REAL_CHECKPOINT = SHARED / "data" / "models" / "demucs_valentini_light32.th"

SMALL = dict(hidden=8, depth=3)  # enough to exercise every layer, fast to build and run
CONFIGS = {
    "causal-glu": dict(SMALL),
    "noncausal-relu-growth1.5-resample2": dict(SMALL, causal=False, glu=False, growth=1.5, resample=2),
}


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """Three seconds of real speech at 16 kHz, (1, time)."""
    return torch.from_numpy(load_16k(demo_clip()[0])[:48_000]).float()[None]


def reference_model(**kwargs):
    from denoiser.demucs import Demucs as RefDemucs

    torch.manual_seed(0)
    return RefDemucs(**kwargs).eval()


def save_package(model, kwargs: dict, path: pathlib.Path) -> pathlib.Path:
    """What the reference trainer writes as best.th (denoiser.utils.serialize_model)."""
    torch.save({"class": type(model), "args": (), "kwargs": kwargs, "state": model.state_dict()}, path)
    return path


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- loading, and the same output as the reference network ------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_package_and_state_dict_give_reference_output(tmp_path, speech, name):
    kwargs = CONFIGS[name]
    ref = reference_model(**kwargs)
    with torch.no_grad():
        expected = ref(speech[None])[0]
    package = save_package(ref, kwargs, tmp_path / "best.th")
    plain = tmp_path / "plain.th"
    torch.save(ref.state_dict(), plain)

    hparams, state = read_checkpoint(package)
    assert {k: hparams[k] for k in kwargs} == kwargs
    assert state.keys() == ref.state_dict().keys()
    # a bare state dict shows everything but resample; the caller supplies it
    overrides = {"resample": kwargs["resample"]} if "resample" in kwargs else None
    inferred, _ = read_checkpoint(plain, overrides=overrides)
    assert inferred == hparams

    for path in (package, plain):
        model = load_demucs(str(path), overrides=overrides)
        assert isinstance(model, Demucs) and not model.training
        with torch.no_grad():
            got = model(speech[None])[0]
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 1e-5, path.name


def test_package_class_maps_to_inert_placeholder(tmp_path):
    """The pickled reference class comes back as our placeholder, which cannot be built."""
    path = save_package(reference_model(**SMALL), SMALL, tmp_path / "best.th")
    from asr_stream.denoisers.demucs_checkpoint import _safe_load

    package = _safe_load(path)
    assert package["class"] is DemucsPlaceholder
    with pytest.raises(TypeError):
        DemucsPlaceholder()


def test_nested_trainer_checkpoint_prefers_best_state(tmp_path):
    ref = reference_model(**SMALL)
    best = {k: v + 1 for k, v in ref.state_dict().items()}
    package = {"class": type(ref), "args": (), "kwargs": SMALL, "state": ref.state_dict()}
    torch.save({"model": package, "best_state": best, "history": [{"train": 0.1}]}, tmp_path / "checkpoint.th")
    model = load_demucs(str(tmp_path / "checkpoint.th"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key])
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "wrapped.th")
    assert read_checkpoint(tmp_path / "wrapped.th")[0]["hidden"] == 8


@pytest.mark.skipif(not REAL_CHECKPOINT.is_file(), reason="../shared (the Valentini Demucs checkpoint) is absent")
def test_real_trainer_checkpoint():
    hparams, state = read_checkpoint(REAL_CHECKPOINT)
    assert (hparams["hidden"], hparams["depth"], hparams["resample"], hparams["causal"]) == (32, 4, 2, True)
    model = load_demucs(str(REAL_CHECKPOINT))
    assert model.hparams == hparams and not model.training
    assert torch.equal(model.state_dict()["encoder.0.0.weight"], state["encoder.0.0.weight"])


# -- nothing in a file runs ---------------------------------------------------------------------

class _Touch:
    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


class _System:
    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.mark.parametrize("payload", [_Touch, _System])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, nested):
    target = tmp_path / "pwned"
    evil = payload(target)
    obj = {"class": None, "args": (), "kwargs": {}, "state": evil} if nested else evil
    torch.save(obj, tmp_path / "evil.th")
    assert not target.exists()
    with pytest.raises(UserError) as excinfo:
        read_checkpoint(tmp_path / "evil.th")
    message = one_line_error(excinfo)
    assert "evil.th" in message and "refusing to run code" in message
    with pytest.raises(UserError):
        load_demucs(str(tmp_path / "evil.th"))
    assert not target.exists()


# -- bad files ----------------------------------------------------------------------------------

def _write_bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _truncated(path):
    torch.save(reference_model(**SMALL).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "random-bytes": (_write_bytes(os.urandom(4096)), "not a PyTorch checkpoint"),
    "text": (_write_bytes(b"hello, this is not a model\n" * 20), "not a PyTorch checkpoint"),
    "empty": (_write_bytes(b""), "not a PyTorch checkpoint"),
    "truncated-zip": (_truncated, "damaged or truncated"),
    "plain-pickle": (lambda p: p.write_bytes(pickle.dumps({"state": 1}, protocol=4)), "not a PyTorch checkpoint"),
    "no-tensors": (lambda p: torch.save({"epoch": 3, "lr": 0.1}, p), "no Demucs weights we recognise (keys: epoch, lr)"),
    "other-network": (lambda p: torch.save(torch.nn.Linear(2, 2).state_dict(), p), "no Demucs weights"),
    "a-tensor": (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_gives_one_line_user_error(tmp_path, case):
    write, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.th"
    write(path)
    with pytest.raises(UserError) as excinfo:
        load_demucs(str(path))
    message = one_line_error(excinfo)
    assert str(path) in message and expected in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_demucs(str(tmp_path / "nope.th"))
    assert "does not exist" in one_line_error(excinfo)


def test_mismatched_tensors_name_what_differs(tmp_path):
    ref = reference_model(**SMALL)
    # the package claims hidden=16 but holds hidden=8 weights
    save_package(ref, dict(SMALL, hidden=16), tmp_path / "shape.th")
    with pytest.raises(UserError) as excinfo:
        load_demucs(str(tmp_path / "shape.th"))
    message = one_line_error(excinfo)
    assert "shape.th" in message and "shape mismatch" in message and "encoder.0.0.weight is (8, 1, 8)" in message

    state = ref.state_dict()
    del state["lstm.lstm.weight_hh_l1"]
    state["extra.weight"] = torch.zeros(1)
    torch.save({"class": type(ref), "args": (), "kwargs": SMALL, "state": state}, tmp_path / "keys.th")
    with pytest.raises(UserError) as excinfo:
        load_demucs(str(tmp_path / "keys.th"))
    message = one_line_error(excinfo)
    assert "missing: lstm.lstm.weight_hh_l1" in message and "unexpected: extra.weight" in message

    save_package(ref, dict(SMALL, wobble=3), tmp_path / "kwargs.th")
    with pytest.raises(UserError, match="unknown hyper-parameter.*wobble"):
        load_demucs(str(tmp_path / "kwargs.th"))
    good = save_package(ref, SMALL, tmp_path / "good.th")
    with pytest.raises(UserError, match="bad hyper-parameters.*resample"):
        load_demucs(str(good), overrides={"resample": 3})
    with pytest.raises(UserError, match="unknown Demucs hyper-parameter.*wobble"):
        load_demucs(str(good), overrides={"wobble": 1})


def test_noncausal_checkpoint_loads(tmp_path):
    path = save_package(reference_model(**SMALL, causal=False), dict(SMALL, causal=False), tmp_path / "bi.th")
    assert load_demucs(str(path)).causal is False


# -- finding files in checkpoints/ ---------------------------------------------------------------

def test_checkpoints_dir_by_name_and_by_demucs(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with pytest.raises(UserError, match="no Demucs checkpoint"):
        load_demucs("demucs", checkpoints_dir=folder)
    ref = reference_model(**SMALL)
    save_package(ref, SMALL, folder / "mine.th")
    assert load_demucs("mine", checkpoints_dir=folder).hparams["hidden"] == 8
    assert load_demucs("demucs", checkpoints_dir=folder).hparams["hidden"] == 8
    save_package(reference_model(**dict(SMALL, hidden=4)), dict(SMALL, hidden=4), folder / "other.th")
    assert load_demucs("other", checkpoints_dir=folder).hparams["hidden"] == 4
    with pytest.raises(UserError) as excinfo:
        load_demucs("demucs", checkpoints_dir=folder)
    message = one_line_error(excinfo)
    assert "several" in message and "mine" in message and "other" in message
    with pytest.raises(UserError) as excinfo:
        load_demucs("nothing-here", checkpoints_dir=folder)
    assert "nothing-here" in one_line_error(excinfo)


def test_pretrained_name_prefers_checkpoints_dir(tmp_path, monkeypatch):
    """checkpoints/dns48.th is used as is: no download (the URL points nowhere)."""
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_DNS48", "http://127.0.0.1:9/dns48-0123456789abcdef.th")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.save(reference_model(**SMALL).state_dict(), tmp_path / "dns48.th")
    assert load_demucs("dns48", checkpoints_dir=tmp_path).hparams["hidden"] == 8


# -- downloads ----------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (base URL, folder, stop)."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join()
            stopped.append(True)

    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, stop
    stop()


def _cached_files(torch_home: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in torch_home.rglob("*") if p.is_file()]


def test_download_verifies_caches_and_loads(tmp_path, server, monkeypatch):
    base, folder, stop = server
    torch.manual_seed(1)
    state = Demucs(**PRETRAINED["dns48"]["hparams"]).state_dict()
    staging = tmp_path / "staging.th"
    torch.save(state, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    staging.rename(folder / f"dns48-{digest[:16]}.th")
    url = f"{base}/dns48-{digest[:16]}.th"
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_DNS48", url)
    empty = tmp_path / "checkpoints"
    empty.mkdir()

    model = load_demucs("dns48", checkpoints_dir=empty)
    assert model.hparams["hidden"] == 48 and model.hparams["resample"] == 4 and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    cached = torch_home / "hub" / "checkpoints" / f"dns48-{digest[:16]}.th"
    assert _cached_files(torch_home) == [cached]

    stop()  # the second load must come from the cache
    assert fetch_pretrained("dns48") == cached
    again = load_demucs("dns48", checkpoints_dir=empty)
    assert torch.equal(again.state_dict()["decoder.0.2.weight"], state["decoder.0.2.weight"])


def test_download_with_wrong_hash_keeps_nothing(tmp_path, server, monkeypatch):
    base, folder, _ = server
    torch.save(reference_model(**SMALL).state_dict(), folder / "dns48-0123456789abcdef.th")
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_DNS48", f"{base}/dns48-0123456789abcdef.th")
    with pytest.raises(UserError) as excinfo:
        load_demucs("dns48", checkpoints_dir=tmp_path / "none")
    message = one_line_error(excinfo)
    assert "0123456789abcdef" in message and "SHA-256" in message
    assert _cached_files(torch_home) == []


def test_download_http_error_and_unreachable_server(tmp_path, server, monkeypatch):
    base, _, _ = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing = f"{base}/dns64-0123456789abcdef.th"
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_DNS64", missing)
    with pytest.raises(UserError) as excinfo:
        load_demucs("dns64", checkpoints_dir=tmp_path)
    message = one_line_error(excinfo)
    assert missing in message and "could not download" in message and "404" in message

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/master64-0123456789abcdef.th"
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_MASTER64", closed)
    with pytest.raises(UserError) as excinfo:
        load_demucs("master64", checkpoints_dir=tmp_path)
    message = one_line_error(excinfo)
    assert closed in message and "could not download" in message and "checkpoints/" in message
    assert _cached_files(tmp_path / "torch") == []


def test_override_url_without_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ASR_STREAM_DEMUCS_URL_DNS48", "http://127.0.0.1:9/dns48.th")
    with pytest.raises(UserError, match="no SHA-256 prefix"):
        fetch_pretrained("dns48")
