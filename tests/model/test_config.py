"""ModelConfig: presets, validation that names the field and says why, serialization."""

import dataclasses

import pytest

from xattn import EncoderDecoder, ModelConfig
from xattn.model.config import PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_models(name):
    config = ModelConfig.preset(name)
    model = EncoderDecoder(config)
    assert model.config is config
    assert config.head_dim * config.num_heads == config.d_model


def test_preset_overrides_and_unknown_preset():
    assert ModelConfig.preset("small", d_model=64).d_model == 64
    with pytest.raises(ValueError, match="unknown preset 'huge'; expected one of tiny, small"):
        ModelConfig.preset("huge")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"d_model": 30}, "ModelConfig.d_model=30: not divisible by num_heads=4"),
        ({"d_model": 0}, "ModelConfig.d_model=0: expected a positive int"),
        ({"num_kv_heads": 3}, "ModelConfig.num_kv_heads=3: must divide num_heads=4"),
        ({"activation": "tanh"}, "ModelConfig.activation='tanh': expected one of gelu"),
        ({"norm": "batchnorm"}, "ModelConfig.norm='batchnorm': expected one of layernorm"),
        ({"positions": "rotary"}, "ModelConfig.positions='rotary': expected one of"),
        ({"dropout": 1.0}, "ModelConfig.dropout=1.0: expected 0 <= value < 1"),
        ({"encoder_layers": -1}, "ModelConfig.encoder_layers=-1: expected an int >= 0"),
        (
            {"target_vocab_size": 50},
            "ModelConfig.share_embeddings=True: one shared matrix "
            "needs vocab_size == target_vocab_size, got 64 and 50",
        ),
        ({"pad_token_id": 64}, "ModelConfig.pad_token_id=64: expected a token id in [0, 64)"),
        ({"bos_token_id": -1}, "ModelConfig.bos_token_id=-1: expected None or a token id"),
        ({"norm_eps": 0}, "ModelConfig.norm_eps=0: expected a positive number"),
        ({"source_features": 8}, "a feature front end has no source embedding to share"),
    ],
)
def test_bad_values_name_the_field_and_why(changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        ModelConfig.preset("tiny", **changes)


def test_frozen_and_round_trips(tmp_path):
    config = ModelConfig.preset("marian")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 8
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    with pytest.raises(ValueError, match="unknown ModelConfig fields: colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": "blue"})
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="bad.json: not readable JSON"):
        ModelConfig.load(tmp_path / "bad.json")
