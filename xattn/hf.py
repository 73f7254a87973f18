"""Import of transformers' Marian, BART and Whisper checkpoints (folders written by
save_pretrained).

Reads config.json, model.safetensors (never a pickled pytorch_model.bin) and, when present,
generation_config.json and the tokenizer files (Marian's SentencePiece models, or a
tokenizer.json). The result gives the same logits and the same greedy and beam outputs as
transformers on the same weights.

Whisper maps onto the same EncoderDecoder: its audio stem (two 1-D convolutions, fixed
sinusoidal positions) is the "whisper" front end, then pre-norm layers, learned decoder
positions and an output layer tied to the token embeddings; its key projections have no
bias (loaded as zeros).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .generation import GenerationConfig
from .model.config import ModelConfig

__all__ = ["hf_config_to_model_config", "load_hf"]

_ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "swish": "silu",
    "silu": "silu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}
# Generation settings transformers reads from config.json when generation_config.json is absent.
_GENERATION_KEYS = (
    "max_length",
    "min_length",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "repetition_penalty",
    "num_return_sequences",
)


def _same(cfg: dict, a: str, b: str, path: Path) -> Any:
    if cfg.get(a) != cfg.get(b):
        raise ValueError(
            f"{path}: {a}={cfg.get(a)} and {b}={cfg.get(b)} differ; xattn's ModelConfig has "
            f"one value for encoder and decoder"
        )
    return cfg[a]


MODEL_TYPES = ("marian", "bart", "whisper")


def hf_config_to_model_config(cfg: dict, path: Path) -> ModelConfig:
    """The ModelConfig that reproduces a transformers Marian, BART or Whisper config."""
    model_type = cfg.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{path}: model_type={model_type!r}; xattn imports {', '.join(MODEL_TYPES)} checkpoints"
        )
    activation = cfg.get("activation_function", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{path}: activation_function={activation!r} is not supported")
    vocab = cfg["vocab_size"]
    shared = True
    target_vocab = None
    if model_type == "marian":
        shared = cfg.get("share_encoder_decoder_embeddings", True)
        if not shared:
            target_vocab = cfg.get("decoder_vocab_size") or vocab
    common = {
        "vocab_size": vocab,
        "target_vocab_size": target_vocab,
        "share_embeddings": shared,
        "tie_output": cfg.get("tie_word_embeddings", True),
        "d_model": cfg["d_model"],
        "encoder_layers": cfg["encoder_layers"],
        "decoder_layers": cfg["decoder_layers"],
        "num_heads": _same(cfg, "encoder_attention_heads", "decoder_attention_heads", path),
        "ffn_dim": _same(cfg, "encoder_ffn_dim", "decoder_ffn_dim", path),
        "activation": _ACTIVATIONS[activation],
        "pre_norm": False,
        "max_positions": cfg.get("max_position_embeddings", 1024),
        "embed_scale": bool(cfg.get("scale_embedding", False)),
        "final_logits_bias": True,
        "dropout": float(cfg.get("dropout", 0.1)),
        "attention_dropout": float(cfg.get("attention_dropout", 0.0)),
        "activation_dropout": float(cfg.get("activation_dropout", 0.0)),
        "pad_token_id": cfg["pad_token_id"],
        "eos_token_id": _first(cfg["eos_token_id"]),
        "bos_token_id": cfg.get("bos_token_id"),
        "decoder_start_token_id": cfg["decoder_start_token_id"],
    }
    if model_type == "marian":
        return ModelConfig(positions="sinusoidal", **common)
    if model_type == "whisper":
        whisper = {
            "share_embeddings": False,
            "tie_output": True,
            "final_logits_bias": False,
            "pre_norm": True,
            "front_end": "whisper",
            "source_features": cfg["num_mel_bins"],
            "source_positions": cfg["max_source_positions"],
            "max_positions": cfg["max_target_positions"],
        }
        return ModelConfig(positions="learned", **{**common, **whisper})
    return ModelConfig(positions="learned", position_offset=2, embed_norm=True, **common)


def _first(value):
    return value[0] if isinstance(value, list) else value


def _weight_map(config: ModelConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(our name, transformers names in order of preference) for every tensor we load."""
    pairs: list[tuple[str, tuple[str, ...]]] = []
    if config.front_end == "whisper":
        pairs.append(("tgt_embed.weight", ("model.decoder.embed_tokens.weight",)))
        pairs.append(("decoder_positions.weight", ("model.decoder.embed_positions.weight",)))
        pairs.append(("front_end.positions", ("model.encoder.embed_positions.weight",)))
        for conv in ("conv1", "conv2"):
            for p in ("weight", "bias"):
                pairs.append((f"front_end.{conv}.{p}", (f"model.encoder.{conv}.{p}",)))
        for side in ("encoder", "decoder"):
            for p in ("weight", "bias"):
                pairs.append((f"{side}_norm.{p}", (f"model.{side}.layer_norm.{p}",)))
    elif config.share_embeddings:
        names = (
            "model.shared.weight",
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
        )
        pairs.append(("src_embed.weight", names))
    else:
        pairs.append(("src_embed.weight", ("model.encoder.embed_tokens.weight",)))
        pairs.append(("tgt_embed.weight", ("model.decoder.embed_tokens.weight",)))
    if not config.tie_output:
        pairs.append(("lm_head.weight", ("lm_head.weight",)))
    if config.final_logits_bias:
        pairs.append(("final_logits_bias", ("final_logits_bias",)))
    if config.positions == "learned" and config.front_end != "whisper":
        pairs.append(("encoder_positions.weight", ("model.encoder.embed_positions.weight",)))
        pairs.append(("decoder_positions.weight", ("model.decoder.embed_positions.weight",)))
    if config.embed_norm:
        for side in ("encoder", "decoder"):
            for p in ("weight", "bias"):
                pairs.append((f"{side}_embed_norm.{p}", (f"model.{side}.layernorm_embedding.{p}",)))
    blocks = {
        "encoder": {
            "self_attn": "self_attn",
            "self_attn_layer_norm": "self_attn_block.norm",
            "fc1": "ffn.fc1",
            "fc2": "ffn.fc2",
            "final_layer_norm": "ffn_block.norm",
        },
        "decoder": {
            "self_attn": "self_attn",
            "self_attn_layer_norm": "self_attn_block.norm",
            "encoder_attn": "cross_attn",
            "encoder_attn_layer_norm": "cross_attn_block.norm",
            "fc1": "ffn.fc1",
            "fc2": "ffn.fc2",
            "final_layer_norm": "ffn_block.norm",
        },
    }
    for side, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(count):
            for theirs, ours in blocks[side].items():
                if theirs.endswith("attn"):
                    leaves = [
                        f"{proj}.{p}"
                        for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
                        for p in ("weight", "bias")
                    ]
                else:
                    leaves = ["weight", "bias"]
                for leaf in leaves:
                    pairs.append(
                        (
                            f"{side}_layers.{i}.{ours}.{leaf}",
                            (f"model.{side}.layers.{i}.{theirs}.{leaf}",),
                        )
                    )
    return pairs


def load_hf(cls, path: str | Path):
    """An EncoderDecoder (class `cls`) with the weights of a transformers folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .data.tokenizers import load_tokenizer
    from .utils import read_json

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such folder (expected a transformers save_pretrained folder)")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: config.json is missing")
    weights = path / "model.safetensors"
    if not weights.is_file():
        if any((path / n).is_file() for n in ("pytorch_model.bin", "model.bin")) or list(
            path.glob("pytorch_model*.bin")
        ):
            raise ValueError(
                f"{path}: only a pickled pytorch_model.bin is here; xattn never unpickles "
                f"weights. Convert it with transformers: "
                f"model.save_pretrained(folder, safe_serialization=True)"
            )
        raise ValueError(f"{path}: model.safetensors is missing")
    cfg = read_json(path / "config.json")
    config = hf_config_to_model_config(cfg, path)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights}: unreadable safetensors file ({err})") from err
    model = cls(config)
    state = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for ours, candidates in _weight_map(config):
        found = next((n for n in candidates if n in tensors), None)
        if found is None:
            if ours == "final_logits_bias" or ours.endswith("k_proj.bias"):
                # transformers zero-initializes the bias when absent; Whisper's keys have none
                loaded[ours] = torch.zeros_like(state[ours])
                continue
            raise ValueError(f"{weights}: tensor {candidates[0]} is missing")
        value = tensors[found]
        if ours == "final_logits_bias":
            value = value.reshape(-1)
        if value.shape != state[ours].shape:
            raise ValueError(
                f"{weights}: {found} has shape {tuple(value.shape)}; config.json implies "
                f"{tuple(state[ours].shape)}"
            )
        loaded[ours] = value.to(state[ours].dtype)
    missing = [k for k in state if k not in loaded and not _is_tied(k, config)]
    if missing:
        raise ValueError(f"{weights}: no source for {missing[:5]}")
    unused = [k for k in tensors if not _known_hf_name(k)]
    if unused:
        kind = cfg.get("model_type")
        raise ValueError(f"{weights}: unexpected tensors {unused[:5]} (not a plain {kind} model?)")
    model.load_state_dict(loaded, strict=False)
    model.generation_config = _generation_config(path, cfg)
    model.tokenizer = load_tokenizer(path)
    return model.eval()


def _is_tied(name: str, config: ModelConfig) -> bool:
    return (name == "lm_head.weight" and config.tie_output) or (
        name == "tgt_embed.weight" and config.share_embeddings
    )


_KNOWN = re.compile(
    r"^(final_logits_bias|lm_head\.weight|proj_out\.weight|model\.shared\.weight|"
    r"model\.(encoder|decoder)\.(embed_tokens|embed_positions)\.weight|"
    r"model\.(encoder|decoder)\.(layernorm_embedding|layer_norm)\.(weight|bias)|"
    r"model\.encoder\.conv[12]\.(weight|bias)|"
    r"model\.(encoder|decoder)\.layers\.\d+\..+)$"
)


def _known_hf_name(name: str) -> bool:
    return bool(_KNOWN.match(name))


def _generation_config(path: Path, cfg: dict) -> GenerationConfig:
    """transformers' rule: generation_config.json if present, else from config.json."""
    from .utils import read_json

    if (path / "generation_config.json").is_file():
        data = read_json(path / "generation_config.json")
    else:
        data = {k: cfg[k] for k in _GENERATION_KEYS if k in cfg}
    for key in ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id"):
        data.setdefault(key, cfg.get(key))
    if "median_filter_width" in cfg:  # Whisper keeps it in config.json
        data.setdefault("median_filter_width", cfg["median_filter_width"])
    return GenerationConfig.from_dict(data)
