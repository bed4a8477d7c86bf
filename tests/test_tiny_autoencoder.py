"""The tiny autoencoder (TAESANA): published weights against reference latents, published key names and shapes,
the AutoencoderTiny conventions, loading from paths and URLs, and the component cost figures."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from sprint_demo.models import tiny_autoencoder
from sprint_demo.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderLoadError
from sprint_demo.tools import autoencoder_bench, bench

DATA = Path(__file__).parent / "data"
ENCODER_FILE = DATA / "taesana_encoder.pth"


def astronaut() -> torch.Tensor:
    """The 512x512 photo as a (1, 3, 512, 512) image in [-1, 1]."""
    pixels = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).unsqueeze(0)
    return pixels.float() / 255 * 2 - 1


@pytest.fixture(scope="module")
def published_encoder() -> TinyAutoencoder:
    return TinyAutoencoder.from_files(encoder=ENCODER_FILE, decoder=None)


@pytest.fixture
def served(tmp_path):
    """A folder served over http on 127.0.0.1; yields (folder, base URL, list of requested paths)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """torch.hub's folder, redirected: downloads land in <it>/checkpoints."""
    folder = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder))
    return folder


# --- Published weights ------------------------------------------------------------------------------------------

def test_published_encoder_matches_the_reference_latents(published_encoder):
    reference = torch.from_numpy(np.load(DATA / "taesana_astronaut_512_latents.npy"))
    with torch.no_grad():
        latents = published_encoder.encode(astronaut()).latents
    assert latents.shape == reference.shape == (1, 32, 16, 16)
    torch.testing.assert_close(latents, reference, rtol=1e-4, atol=1e-4)


def test_published_latents_have_the_transformers_scale(published_encoder):
    """Scaled DC-AE latents have about unit variance; unscaled ones would have about 1 / 0.41407 = 2.4."""
    with torch.no_grad():
        latents = published_encoder.encode(astronaut()).latents
    assert published_encoder.config.scaling_factor == 1.0
    assert 0.8 < latents.std().item() < 1.25
    assert abs(latents.mean().item()) < 0.2


def test_encoder_keys_and_shapes_are_the_published_ones(published_encoder):
    published = torch.load(ENCODER_FILE, map_location="cpu", weights_only=True)
    ours = TinyAutoencoder.build_random("full").encoder.state_dict()
    assert len(published) == 69
    assert list(ours) == list(published)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in published.items()}
    loaded = published_encoder.encoder.state_dict()
    assert all(torch.equal(loaded[k], published[k].float()) for k in published)


def test_decoder_keys_and_shapes_are_the_published_ones():
    published = json.loads((DATA / "taesana_decoder_shapes.json").read_text())
    ours = TinyAutoencoder.build_random("full").decoder.state_dict()
    assert list(ours) == list(published)
    assert {k: list(v.shape) for k, v in ours.items()} == published
    assert sum(v.numel() for v in ours.values()) == 8_301_763


# --- Conventions ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [pytest.param("full", marks=pytest.mark.slow), "preview"])
def test_random_variants_round_trip_shapes_in_minus_one_to_one(size):
    model = TinyAutoencoder.build_random(size)
    latents = torch.randn(2, 32, 2, 3, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        image = model.decode(latents).sample
        again = model.encode(image).latents
        (tuple_image,) = model.decode(latents, return_dict=False)
    assert image.shape == (2, 3, 64, 96)
    assert image.min() >= -1 and image.max() <= 1
    assert image.std() > 0  # not a constant picture
    assert again.shape == (2, 32, 2, 3)
    assert torch.equal(tuple_image, image)


def test_images_are_taken_in_minus_one_to_one(published_encoder):
    """encode(x) runs TAESD's encoder on (x + 1) / 2: its own [0, 1] convention."""
    image = astronaut()[:, :, :128, :128]
    with torch.no_grad():
        ours = published_encoder.encode(image).latents
        direct = published_encoder.encoder((image + 1) / 2)
    assert torch.equal(ours, direct)


def test_build_random_is_deterministic_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b = TinyAutoencoder.build_random("preview"), TinyAutoencoder.build_random("preview")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = TinyAutoencoder.build_random("preview", seed=1)
    assert not torch.equal(a.decoder[1].weight, other.decoder[1].weight)


def test_dtype_device_and_to_behave_like_a_diffusers_model():
    model = TinyAutoencoder.build_random("preview")
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    model = model.to(torch.float16)
    assert model.dtype == torch.float16
    assert model.config.latent_channels == 32 and model.config.scaling_factor == 1.0


def test_bad_inputs_are_refused_with_the_shape():
    model = TinyAutoencoder.build_random("preview")
    with pytest.raises(ValueError, match=r"\(1, 4, 64, 64\)"):
        model.encode(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(1, 16, 2, 2\)"):
        model.decode(torch.zeros(1, 16, 2, 2))
    with pytest.raises(ValueError, match="'huge'"):
        TinyAutoencoder.build_random("huge")


# --- Loading ----------------------------------------------------------------------------------------------------

def test_a_missing_half_raises_a_clear_error(published_encoder):
    assert published_encoder.has_encoder and not published_encoder.has_decoder
    with pytest.raises(RuntimeError, match=r"without a decoder.*from_files\(decoder="):
        published_encoder.decode(torch.zeros(1, 32, 2, 2))
    with pytest.raises(ValueError, match="both were None"):
        TinyAutoencoder.from_files(encoder=None, decoder=None)


def test_a_decoder_alone_decodes_and_refuses_to_encode(tmp_path):
    saved = tmp_path / "taesana_decoder.pth"
    torch.save(TinyAutoencoder.build_random("full").decoder.half().state_dict(), saved)
    model = TinyAutoencoder.from_files(encoder=None, decoder=saved)
    assert model.has_decoder and not model.has_encoder
    with torch.no_grad():
        assert model.decode(torch.zeros(1, 32, 1, 1)).sample.shape == (1, 3, 32, 32)
    with pytest.raises(RuntimeError, match=r"without an encoder.*from_files\(encoder="):
        model.encode(torch.zeros(1, 3, 32, 32))


def test_missing_or_wrong_files_fail_naming_the_file(tmp_path):
    with pytest.raises(TinyAutoencoderLoadError, match="nowhere.pth.*no such file"):
        TinyAutoencoder.from_files(encoder=tmp_path / "nowhere.pth", decoder=None)
    with pytest.raises(TinyAutoencoderLoadError, match=r"taesana_encoder.pth is not a TAESANA decoder"):
        TinyAutoencoder.from_files(encoder=None, decoder=ENCODER_FILE)  # an encoder where a decoder belongs
    junk = tmp_path / "junk.pth"
    junk.write_text("<html>not found</html>")
    with pytest.raises(TinyAutoencoderLoadError, match="junk.pth is not a TAESANA encoder"):
        TinyAutoencoder.from_files(encoder=junk, decoder=None)


def test_a_url_is_downloaded_once_into_the_hub_cache(served, hub_dir, published_encoder):
    folder, base, requests = served
    (folder / "taesana_encoder.pth").write_bytes(ENCODER_FILE.read_bytes())
    torch.save(TinyAutoencoder.build_random("full").decoder.half().state_dict(), folder / "taesana_decoder.pth")
    urls = dict(encoder=f"{base}/taesana_encoder.pth", decoder=f"{base}/taesana_decoder.pth")

    first = TinyAutoencoder.from_files(**urls)
    assert sorted(requests) == ["/taesana_decoder.pth", "/taesana_encoder.pth"]
    cached = hub_dir / "checkpoints" / "taesana_encoder.pth"
    assert cached.read_bytes() == ENCODER_FILE.read_bytes()
    assert (hub_dir / "checkpoints" / "taesana_decoder.pth").is_file()

    second = TinyAutoencoder.from_files(**urls)
    assert len(requests) == 2  # read from the cache, not downloaded again
    for model in (first, second):
        assert all(torch.equal(a, b) for a, b in zip(model.encoder.state_dict().values(),
                                                      published_encoder.encoder.state_dict().values()))


def test_an_explicit_cache_dir_is_used(served, tmp_path):
    folder, base, requests = served
    (folder / "taesana_encoder.pth").write_bytes(ENCODER_FILE.read_bytes())
    model = TinyAutoencoder.from_files(encoder=f"{base}/taesana_encoder.pth", decoder=None,
                                       cache_dir=tmp_path / "mine")
    assert model.has_encoder and (tmp_path / "mine" / "taesana_encoder.pth").is_file()


def test_an_unreachable_url_says_what_to_do(served, hub_dir):
    _, base, _ = served
    with pytest.raises(TinyAutoencoderLoadError, match=r"could not download.*absent.pth.*Offline"):
        TinyAutoencoder.from_files(encoder=f"{base}/absent.pth", decoder=None)
    assert not (hub_dir / "checkpoints" / "absent.pth").exists()


def test_a_stalled_download_gives_up_with_a_clear_error(hub_dir, monkeypatch):
    """A server that accepts the connection and never answers (a network dropping packets): huggingface_hub's
    downloader gives up after its timeout at each of its few tries instead of holding the start-up forever, and
    leaves no file behind. (Its timeout is read at each call: shortened here.)"""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshakes; nobody ever reads or writes
    began = time.monotonic()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/taesana_encoder.pth"
        with pytest.raises(TinyAutoencoderLoadError, match=r"could not download.*Timeout"):
            TinyAutoencoder.from_files(encoder=url, decoder=None)
    finally:
        silent.close()
    assert time.monotonic() - began < 60  # a handful of tries, each bounded by the timeout
    assert list((hub_dir / "checkpoints").iterdir()) == []


def test_a_published_url_must_deliver_the_published_file(served, hub_dir, monkeypatch):
    folder, base, _ = served
    (folder / "taesana_encoder.pth").write_bytes(ENCODER_FILE.read_bytes())
    (folder / "tampered_encoder.pth").write_bytes(ENCODER_FILE.read_bytes() + b"\0")
    blob = "7e6354ea9e818c2fe56d3e80070a9e5e8a37be2f"  # the published encoder's git blob id
    monkeypatch.setattr(tiny_autoencoder, "_PUBLISHED_GIT_BLOBS",
                        {f"{base}/taesana_encoder.pth": blob, f"{base}/tampered_encoder.pth": blob})
    assert TinyAutoencoder.from_files(encoder=f"{base}/taesana_encoder.pth", decoder=None).has_encoder
    with pytest.raises(TinyAutoencoderLoadError, match="not the published one"):
        TinyAutoencoder.from_files(encoder=f"{base}/tampered_encoder.pth", decoder=None)
    assert not (hub_dir / "checkpoints" / "tampered_encoder.pth").exists()


def test_the_default_sources_are_the_published_files():
    for url in (tiny_autoencoder.PUBLISHED_ENCODER_URL, tiny_autoencoder.PUBLISHED_DECODER_URL):
        assert url.startswith("https://raw.githubusercontent.com/madebyollin/taesd/")
        assert tiny_autoencoder.PUBLISHED_COMMIT in url and url in tiny_autoencoder._PUBLISHED_GIT_BLOBS
    assert tiny_autoencoder._git_blob_id(ENCODER_FILE) == tiny_autoencoder._PUBLISHED_GIT_BLOBS[
        tiny_autoencoder.PUBLISHED_ENCODER_URL]


# --- Cost -------------------------------------------------------------------------------------------------------

def test_component_flops_at_1024():
    """Counted on the meta device. The tiny figures match a count by hand of the published shapes (2 x MACs of
    every convolution): 33.3 GFLOP to encode, 592 to decode."""
    flops = autoencoder_bench.component_flops(1024)
    assert flops["tiny_encode"] == pytest.approx(33.3, abs=0.1)
    assert flops["tiny_decode"] == pytest.approx(592.1, abs=0.1)
    assert flops["dc_ae_encode"] == pytest.approx(5180, rel=0.01)
    assert flops["dc_ae_decode"] == pytest.approx(8369, rel=0.01)


def test_bench_components_mode_is_parsed_alone():
    args = bench.parse_args(["--mode", "components", "--size", "256"])
    assert args.mode == ["components"] and args.repeat == 3 and args.size == 256
    assert bench.parse_args(["--mode", "t2i"]).repeat == 10
    with pytest.raises(SystemExit):
        bench.parse_args(["--mode", "components,t2i"])
    with pytest.raises(ValueError, match="multiple of 32.*got 100"):
        autoencoder_bench.benchmark_components(100)
    with pytest.raises(ValueError, match="repeat must be a positive integer, got 0"):
        autoencoder_bench.benchmark_components(64, repeat=0)


@pytest.mark.slow
def test_benchmark_components_times_both_autoencoders(tmp_path, capsys):
    assert bench.main(["--mode", "components", "--size", "32", "--repeat", "1", "--device", "cpu",
                       "--json", str(tmp_path / "c.json")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())["components"]
    assert set(result["median_ms"]) == {"dc_ae_encode", "dc_ae_decode", "tiny_encode", "tiny_decode"}
    assert all(v > 0 for v in result["median_ms"].values())
    assert result["speedup"]["encode"] == pytest.approx(
        result["median_ms"]["dc_ae_encode"] / result["median_ms"]["tiny_encode"], abs=0.06)
    assert set(result["median_cpu_ms"]) == set(result["median_ms"])  # CPU runs also report CPU time
    assert result["speedup_cpu_time"]["decode"] == pytest.approx(
        result["median_cpu_ms"]["dc_ae_decode"] / result["median_cpu_ms"]["tiny_decode"], abs=0.06)
    assert "CPU-time ratio" in capsys.readouterr().out


def test_on_the_cpu_only_the_tiny_autoencoder_goes_channels_last():
    """The one CPU speed-up (speedups.apply_speedups): NHWC for the tiny autoencoder's convolutions, measured faster
    there; the DC-AE keeps its layout, so full-lane CPU frames keep their pixels."""
    from sprint_demo.engine import load_engine
    from sprint_demo.models.speedups import SpeedOptions

    def nhwc(module) -> bool:
        weights = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        return all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights)

    engine = load_engine("preview", device="cpu", warmup=False)
    assert engine.speed.channels_last and "channels_last" in engine.speed.describe()
    assert nhwc(engine.renderer.tiny) and not nhwc(engine.renderer.pipe.vae)
    plain = load_engine("preview", device="cpu", warmup=False, speed=SpeedOptions(channels_last=False))
    assert not plain.speed.channels_last and not nhwc(plain.renderer.tiny)
    z = torch.randn(1, 32, 8, 8)
    with torch.no_grad():  # the layout changes the summation order, not the result beyond float rounding
        assert torch.allclose(engine.renderer.tiny.decode(z).sample, plain.renderer.tiny.decode(z).sample, atol=1e-4)
