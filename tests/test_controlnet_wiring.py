"""Choosing the ControlNet wiring, and the warning when weights run with another wiring than they were trained with.

A diffusers-format copy of NVlabs' HED ControlNet (diffusers' ``convert_sana_controlnet_to_diffusers.py`` renames
the keys one to one into a stock ``SanaControlNetModel``) runs, by default, with the diffusers wiring that
diffusers' own SanaControlNetPipeline uses: each residual lands one block later than NVlabs trained it. The loader
says so (log, ``LoadReport.warning``, the UI's ControlNet note) and ``--controlnet-wiring nvlabs`` runs it as trained,
which is tested here to equal NVlabs' ``.pth`` of the same weights.
"""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import SanaControlNetModel
from test_controlnet import control_latents, randomise, step_inputs, tiny_transformer

from sprint_demo import settings
from sprint_demo.engine import Engine
from sprint_demo.models import checkpoints
from sprint_demo.models.checkpoints import (
    diffusers_to_nvlabs_state_dict,
    load_controlnet,
    load_nvlabs_checkpoint,
    nvlabs_conversion,
)
from sprint_demo.models.controlnet import ControlInputs, SanaSprintControlNetModel, sana_transformer_forward
from sprint_demo.models.loading import ModelLoadError, attach_controlnet, load_pipeline
from sprint_demo.web import launch, messages

KNOWN_COPY = "Sana_600M_1024px_ControlNet_diffusers"  # the folder name of a known converted copy, downloaded
WIRED_ALIKE = 1e-4  # max |difference| of two loads of the same weights run with the same wiring (see below)


def stock_controlnet(seed: int = 1) -> SanaControlNetModel:
    """diffusers' own class, Sana 1.0 shapes (no qk_norm, no guidance) at the preview's widths, random weights."""
    return randomise(SanaControlNetModel(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=7,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32,
    ), seed).eval()


def controlled(transformer, controlnet) -> torch.Tensor:
    inputs = step_inputs(transformer)
    return sana_transformer_forward(transformer, **inputs, control=ControlInputs(controlnet, control_latents(
        transformer), 1.0))


def test_the_known_copies_and_the_released_layouts_are_recognised():
    tiny = dict(num_layers=7, num_attention_heads=2, attention_head_dim=16)
    assert [nvlabs_conversion(source, tiny) for source in settings.NVLABS_CONVERTED_CONTROLNETS] == [True, True]
    assert nvlabs_conversion(f"/models/{KNOWN_COPY}", tiny)  # a downloaded folder keeps the name
    assert not nvlabs_conversion("/models/my-own-controlnet", tiny)
    # NVlabs' 600M and 1600M HED ControlNets: 7 blocks of 36 x 32 and 70 x 32
    assert nvlabs_conversion("any", dict(num_layers=7, num_attention_heads=36, attention_head_dim=32))
    assert nvlabs_conversion("any", dict(num_layers=7, num_attention_heads=70, attention_head_dim=32))
    assert not nvlabs_conversion("any", dict(num_layers=5, num_attention_heads=36, attention_head_dim=32))


@torch.no_grad()
def test_a_converted_copy_warns_under_the_diffusers_wiring_and_runs_as_trained_under_the_nvlabs_one(tmp_path):
    transformer = tiny_transformer(qk_norm=None, guidance_embeds=False)
    stock = stock_controlnet()
    stock.save_pretrained(tmp_path / KNOWN_COPY)
    torch.save({"state_dict": diffusers_to_nvlabs_state_dict(stock.state_dict())}, tmp_path / "nvlabs.pth")
    as_trained, _ = load_nvlabs_checkpoint(tmp_path / "nvlabs.pth", dict(transformer.config))

    default, report = load_controlnet(tmp_path / KNOWN_COPY, dict(transformer.config))
    assert report.wiring == "diffusers" and report.trained_wiring == "nvlabs"
    assert "one block later than in training" in report.warning and "--controlnet-wiring nvlabs" in report.warning
    assert report.warning in report.description

    forced, report = load_controlnet(tmp_path / KNOWN_COPY, dict(transformer.config), wiring="nvlabs")
    assert report.wiring == forced.config.wiring == "nvlabs" and report.warning is None
    expected = controlled(transformer, as_trained)
    # Two loads of the same weights (safetensors folder, .pth) do not share tensors: measured 1.8e-6 apart at most
    # (outputs about 0.5 in size); the default (diffusers) wiring is 0.64 away.
    assert (controlled(transformer, forced) - expected).abs().max() < WIRED_ALIKE
    assert (controlled(transformer, default) - expected).abs().max() > 100 * WIRED_ALIKE  # the wiring matters


def test_an_unknown_stock_folder_runs_with_the_diffusers_wiring_without_a_warning(tmp_path):
    stock_controlnet().save_pretrained(tmp_path / "someone-elses")
    _model, report = load_controlnet(tmp_path / "someone-elses")
    assert report.wiring == "diffusers" and report.trained_wiring is None and report.warning is None


def test_forcing_the_other_wiring_on_weights_that_record_theirs_warns(tmp_path):
    transformer = tiny_transformer()
    ours = randomise(SanaSprintControlNetModel.from_transformer(transformer)).eval()
    ours.save_pretrained(tmp_path / "ours")
    torch.save({"state_dict": diffusers_to_nvlabs_state_dict(ours.state_dict())}, tmp_path / "ours.pth")
    for source in (tmp_path / "ours", tmp_path / "ours.pth"):
        model, report = load_controlnet(source, dict(transformer.config), wiring="diffusers")
        assert model.config.wiring == "diffusers" and report.trained_wiring == "nvlabs"
        assert "one block later" in report.warning
        assert load_controlnet(source, dict(transformer.config))[1].warning is None  # auto: as recorded
    SanaSprintControlNetModel.from_transformer(transformer, wiring="diffusers").save_pretrained(tmp_path / "ours-d")
    _model, report = load_controlnet(tmp_path / "ours-d", dict(transformer.config), wiring="nvlabs")
    assert "one block earlier" in report.warning and "--controlnet-wiring diffusers" in report.warning


def test_a_bad_wiring_is_refused_by_name(tmp_path):
    stock_controlnet().save_pretrained(tmp_path / "stock")
    with pytest.raises(ValueError, match="'sideways'"):
        load_controlnet(tmp_path / "stock", wiring="sideways")
    loaded = load_pipeline("preview", device="cpu", tiny_autoencoder=None)
    with pytest.raises(ModelLoadError, match="'sideways'"):
        attach_controlnet(loaded, str(tmp_path / "stock"), "sideways")


def test_the_warning_reaches_the_log_and_the_page_s_controlnet_note(tmp_path, caplog):
    stock_controlnet().save_pretrained(tmp_path / KNOWN_COPY)
    loaded = load_pipeline("preview", device="cpu", tiny_autoencoder=None)
    with caplog.at_level(logging.WARNING, logger="sprint_demo.models.loading"):
        attach_controlnet(loaded, str(tmp_path / KNOWN_COPY))
    assert any("--controlnet-wiring nvlabs" in record.getMessage() for record in caplog.records)
    engine = Engine(loaded)
    try:
        note = messages.controlnet_note(engine)
        assert "Warning" in note and "--controlnet-wiring nvlabs" in note and KNOWN_COPY in note
    finally:
        engine.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sprint_demo.models.loading"):
        attach_controlnet(loaded, str(tmp_path / KNOWN_COPY), "nvlabs")
    assert not caplog.records and loaded.controlnet_report.warning is None


def test_the_flag_and_its_environment_default():
    assert launch.parse_args([]).controlnet_wiring == settings.CONTROLNET_WIRING == "auto"
    args = launch.parse_args(["--controlnet-wiring", "nvlabs"])
    assert launch.engine_options(args)["controlnet_wiring"] == "nvlabs"
    with pytest.raises(SystemExit):
        launch.parse_args(["--controlnet-wiring", "sideways"])
    parser = launch.build_parser()
    parser.set_defaults(controlnet_wiring="sideways")  # what SPRINT_CONTROLNET_WIRING=sideways gives
    with pytest.raises(SystemExit):
        launch.parse_args([], parser)


def test_the_wirings_are_written_once():
    from sprint_demo.models import controlnet

    assert controlnet.WIRINGS is settings.CONTROLNET_WIRINGS is checkpoints.WIRINGS
