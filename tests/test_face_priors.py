"""Face priors (GFPGAN, CodeFormer) through the project's own loader, with real architectures and random weights.

The official weights cannot be fetched here, so each test builds the real architecture, saves random
weights in the official file layout (``{"params_ema": state_dict}``) and runs the whole path on real
FER2013 faces. A 512 px forward costs seconds per face on a CPU: the nets are built once per module and
see one or two faces.
"""

from __future__ import annotations

import dataclasses
import http.server
import sys
import threading
import time

import numpy as np
import pytest
import torch

from fer_helpers import face_priors, restore
from fer_helpers.restore import RestoreContext, RestorerUnavailable


@pytest.fixture(scope="module")
def faces():
    from fer_helpers.data import load_folder
    from fer_helpers.paths import SAMPLE_FER2013_DIR

    ds = load_folder(SAMPLE_FER2013_DIR, "test")
    keep = ds.images.reshape(len(ds), -1).std(axis=1) > 5  # not the sample's blank image
    return ds.images[keep][:2]


@pytest.fixture(scope="module")
def gfpgan_file(tmp_path_factory):
    """Random GFPGANv1Clean weights (seed 0) in the official layout, and the state dict they came from."""
    with face_priors.legacy_imports():
        from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    torch.manual_seed(0)
    net = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path = tmp_path_factory.mktemp("gfpgan") / "random_gfpgan.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path, net.state_dict()


@pytest.fixture(scope="module")
def gfpgan(gfpgan_file):
    return restore.create("gfpgan_v1.4", RestoreContext(weights={"gfpgan_v1.4": str(gfpgan_file[0])}, allow_download=False, batch_size=2))


def _unavailable(name: str, ctx: RestoreContext, within_s: float) -> str:
    """Build ``name``, expect :class:`RestorerUnavailable` within ``within_s``; return its one-line message."""
    t0 = time.perf_counter()
    with pytest.raises(RestorerUnavailable) as e:
        restore.create(name, ctx)
    assert time.perf_counter() - t0 < within_s
    msg = str(e.value)
    assert "\n" not in msg and e.value.fix
    return msg


def test_registered_as_face_priors():
    assert {"gfpgan_v1.3", "gfpgan_v1.4", "codeformer"} <= set(restore.available_names())
    assert {restore.REGISTRY[n].family for n in ("gfpgan_v1.3", "gfpgan_v1.4", "codeformer")} == {"face prior"}


@pytest.mark.slow
def test_gfpgan_loads_params_ema_from_the_file(gfpgan, gfpgan_file):
    saved, loaded = gfpgan_file[1], gfpgan.net.state_dict()
    assert loaded.keys() == saved.keys()
    for k in ("conv_body_first.weight", "final_linear.weight", "stylegan_decoder.noises.noise0"):
        assert torch.equal(loaded[k], saved[k])


@pytest.mark.slow
def test_gfpgan_restores_real_faces_deterministically(gfpgan, faces):
    out = gfpgan(faces)
    assert out.shape == (2, 48, 48) and out.dtype == np.uint8
    assert out.std() > 0
    # the same face alone gives the same result: no random noise, no dependence on batch neighbours
    assert np.array_equal(gfpgan(faces[:1]), out[:1])

    hires = gfpgan.restore_hires(faces[:1])
    assert hires.shape == (1, 512, 512, 3) and hires.dtype == np.uint8
    # the 48 px output is the luma of the 512 px output, downscaled (up to the 512 px output's rounding)
    luma = torch.from_numpy(hires).float().div(255) @ torch.tensor(face_priors.LUMA_601)
    small = torch.nn.functional.interpolate(luma[:, None], size=(48, 48), mode="bicubic", antialias=True)
    assert np.abs(small[0, 0].mul(255).round().numpy() - out[0]).max() <= 2


def test_missing_weights_fail_fast_and_say_how_to_get_them(tmp_path):
    msg = _unavailable("gfpgan_v1.4", RestoreContext(allow_download=False, cache_dir=tmp_path), within_s=1.0)
    assert str(tmp_path / "weights" / "GFPGANv1.4.pth") in msg
    assert "restoration.weights.gfpgan_v1.4" in msg and face_priors.WEIGHTS["gfpgan_v1.4"].url in msg

    given = tmp_path / "nowhere.pth"
    msg = _unavailable("gfpgan_v1.3", RestoreContext(weights={"gfpgan_v1.3": str(given)}), within_s=1.0)
    assert str(given) in msg and "restoration.weights.gfpgan_v1.3" in msg


def test_truncated_file_is_named(tmp_path, gfpgan_file):
    bad = tmp_path / "GFPGANv1.4.pth"
    with open(gfpgan_file[0], "rb") as f:
        bad.write_bytes(f.read(1000))
    msg = _unavailable("gfpgan_v1.4", RestoreContext(weights={"gfpgan_v1.4": str(bad)}), within_s=30)
    assert str(bad) in msg and "truncated" in msg


def test_cached_file_of_the_wrong_size_is_named(tmp_path):
    cached = tmp_path / "weights" / "GFPGANv1.4.pth"
    cached.parent.mkdir()
    cached.write_bytes(b"\0" * 1000)
    msg = _unavailable("gfpgan_v1.4", RestoreContext(cache_dir=tmp_path), within_s=1.0)
    assert str(cached) in msg and "1,000 bytes" in msg and "348,632,874" in msg


@pytest.mark.parametrize("content, says", [
    ({"params_ema": {"foo": torch.zeros(1)}}, "is not GFPGANv1Clean weights"),
    ({"state_dict": {"foo": torch.zeros(1)}}, "no 'params_ema' or 'params' entry"),
])
def test_wrong_architecture_is_named(tmp_path, content, says):
    bad = tmp_path / "other.pth"
    torch.save(content, bad)
    msg = _unavailable("gfpgan_v1.4", RestoreContext(weights={"gfpgan_v1.4": str(bad)}), within_s=30)
    assert str(bad) in msg and says in msg


def test_unreachable_download_fails_fast_and_leaves_no_file(tmp_path, monkeypatch):
    spec = face_priors.WEIGHTS["gfpgan_v1.4"]
    monkeypatch.setitem(face_priors.WEIGHTS, "gfpgan_v1.4", dataclasses.replace(spec, url="http://127.0.0.1:9/x.pth"))
    cache = tmp_path / "cache"
    msg = _unavailable("gfpgan_v1.4", RestoreContext(allow_download=True, cache_dir=cache), within_s=10)
    assert "could not download http://127.0.0.1:9/x.pth" in msg and "restoration.weights.gfpgan_v1.4" in msg
    assert [p for p in cache.rglob("*") if p.is_file()] == []


@pytest.fixture
def served(tmp_path):
    """A local HTTP server for ``tmp_path/www``: the real download path without the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("size_ok", [True, False])
def test_download_checks_the_size_before_renaming_into_place(served, tmp_path, monkeypatch, size_ok):
    root, base = served
    (root / "w.pth").write_bytes(b"x" * 5000)
    size = 5000 if size_ok else 348_632_874
    monkeypatch.setitem(face_priors.WEIGHTS, "gfpgan_v1.3", face_priors.WeightsFile("GFPGANv1.3.pth", f"{base}/w.pth", size))
    dest = tmp_path / "cache" / "weights" / "GFPGANv1.3.pth"
    if size_ok:
        face_priors.download("gfpgan_v1.3", dest)
        assert dest.read_bytes() == b"x" * 5000
    else:
        with pytest.raises(RestorerUnavailable, match="got 5,000 bytes, expected 348,632,874"):
            face_priors.download("gfpgan_v1.3", dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == (["GFPGANv1.3.pth"] if size_ok else [])


@pytest.mark.slow
def test_codeformer_restores_real_faces(tmp_path, faces):
    pytest.importorskip("codeformer.basicsr.archs.codeformer_arch", reason=f"codeformer-pip not installed: {face_priors.CODEFORMER_INSTALL}")
    with face_priors.legacy_imports():
        from codeformer.basicsr.archs.codeformer_arch import CodeFormer

    torch.manual_seed(0)
    net = CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9, connect_list=["32", "64", "128", "256"])
    path = tmp_path / "random_codeformer.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    r = restore.create("codeformer", RestoreContext(weights={"codeformer": str(path)}, allow_download=False, options={"codeformer": {"w": 0.8}}))
    assert torch.equal(r.net.state_dict()["position_emb"], net.state_dict()["position_emb"])
    out = r(faces[:1])  # one face: a CodeFormer forward at 512 px costs several seconds on a CPU
    assert out.shape == (1, 48, 48) and out.dtype == np.uint8 and out.std() > 0
    assert "w = 0.8" in r.describe()


def test_codeformer_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codeformer.basicsr.archs.codeformer_arch", None)  # makes the import fail
    weights = tmp_path / "codeformer.pth"
    weights.write_bytes(b"\0")
    msg = _unavailable("codeformer", RestoreContext(weights={"codeformer": str(weights)}), within_s=10)
    assert "codeformer-pip is not installed/importable" in msg and face_priors.CODEFORMER_INSTALL in msg


def test_face_priors_stay_off_the_cpu_unless_asked(tmp_path):
    """The default parameters never start a seconds-per-face job on a CPU by surprise."""
    from fer_helpers.config import parse_params
    from fer_helpers.stages.restoration import context_for

    weights = tmp_path / "GFPGANv1.4.pth"
    weights.write_bytes(b"placeholder")  # the guard comes before the file is read
    params = parse_params({"compute": {"device": "cpu"}, "restoration": {"weights": {"gfpgan_v1.4": str(weights)}}})
    with pytest.raises(RestorerUnavailable, match="seconds per face on a CPU") as e:
        restore.create("gfpgan_v1.4", context_for(params))
    assert "face_priors_on_cpu: true" in e.value.fix
