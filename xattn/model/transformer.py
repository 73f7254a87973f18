"""EncoderDecoder: the encoder reads the source, the decoder writes the target and reads the
encoder's output (the memory) through cross-attention in every layer.

    logits = decode(tgt_ids, encode(src_ids))

Cached generation projects each layer's cross-attention keys and values once per source
(`start_decoding`), shared by every step and every beam, and keeps causal self-attention
keys and values in preallocated caches; `decode_step` consumes new tokens and returns the
new state (nothing is stored on the model).

Shape letters: B batch (sources), N decoder rows (B times beams), S source length, T target
length, D = d_model, V target vocabulary, F source feature width.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import CrossAttentionMemory, KVCache
from ..attention.cache import moved_rows
from ..attention.functional import ReturnWeights
from ..generation import GenerationConfig, search
from ..generation.search import beam_advance
from ..utils import format_shape, replace_dir
from .compiled import (
    compiled_beam,
    compiled_encoder,
    compiled_greedy,
    compiled_step,
)
from .config import ModelConfig
from .frontends import FrontEnd, build_front_end
from .layers import (
    DecoderLayer,
    EncoderLayer,
    FeatureFrontEnd,
    LayerStep,
    LearnedPositions,
    SinusoidalPositions,
    decode_one,
    dropout,
    embed_scale,
    make_norm,
)
from .packing import _stamp, forget, layer_step

__all__ = ["DecoderState", "EncoderDecoder", "GenerationOutput"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"


@dataclass(frozen=True)
class DecoderState:
    """Everything incremental decoding needs, passed in and returned.

    memories: per decoder layer, the projected source keys/values (batch B).
    caches: per decoder layer, the self-attention KVCache (batch N, a multiple of B).
    length: target positions consumed so far.
    steps: per decoder layer, the layer read once for the steps of generate (a
    layers.LayerStep, weights prepacked for the CPU), and output, the output layer's
    (with the final logits bias).
    """

    memories: tuple[CrossAttentionMemory, ...]
    caches: tuple[KVCache, ...]
    length: int = 0
    steps: tuple = ()
    output: Any = None

    def reorder(self, indices: Tensor) -> DecoderState:
        """Row i continues row indices[i] (beam search). The memories are shared, untouched:
        indices must keep each row among the rows of its own source. The caches are
        reordered in place (KVCache.reorder): the state this is called on is not to be
        used after."""
        moved = moved_rows(indices)
        caches = tuple(c.reorder(indices, moved) for c in self.caches)
        return DecoderState(self.memories, caches, self.length, self.steps, self.output)


@dataclass(frozen=True)
class GenerationOutput:
    """sequences (B * R, 1 + N); scores (B * R,) for beam search, else None;
    cross_attention: per decoder layer, the cross-attention weights of the generated tokens,
    (B * R, N, H, S) for return_weights=True or (B * R, N, S) for "mean", zeros after the
    end token."""

    sequences: Tensor
    scores: Tensor | None
    cross_attention: tuple[Tensor, ...] | None


def _positions(config: ModelConfig) -> nn.Module | None:
    if config.positions == "sinusoidal":
        return SinusoidalPositions(config.max_positions, config.d_model)
    if config.positions == "learned":
        return LearnedPositions(config.max_positions, config.d_model, config.position_offset)
    return None


class EncoderDecoder(nn.Module):
    """An encoder-decoder transformer (see ModelConfig for every choice).

    Args:
        config: the ModelConfig.
        front_end: optional module turning the encoder input (B, S, ...) into (B, S, D)
            embeddings; default: token embeddings, or a linear layer over float features
            when config.source_features is set.
    """

    def __init__(self, config: ModelConfig, *, front_end: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = c = config
        D = c.d_model
        self.src_embed = (
            None
            if c.source_features is not None
            else nn.Embedding(c.vocab_size, D, padding_idx=c.pad_token_id)
        )
        if c.share_embeddings:
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(c.target_vocab, D, padding_idx=c.pad_token_id)
        if front_end is None and c.front_end is not None:
            front_end = build_front_end(c)
        elif front_end is None and c.source_features is not None:
            front_end = FeatureFrontEnd(c.source_features, D)
        self.front_end = front_end
        # a front end that places its tokens itself (image grid, Whisper) needs no table here
        own_positions = getattr(front_end, "adds_positions", False)
        self.encoder_positions = None if own_positions else _positions(c)
        self.decoder_positions = _positions(c)
        self.encoder_embed_norm = make_norm(c) if c.embed_norm else None
        self.decoder_embed_norm = make_norm(c) if c.embed_norm else None
        self.encoder_layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.encoder_norm = make_norm(c) if c.pre_norm else None
        self.decoder_norm = make_norm(c) if c.pre_norm else None
        self.embed_scale = embed_scale(c)
        with torch.no_grad():  # N(0, 1) -> N(0, 1 / scale^2), the padding row stays zero
            for table in {self.src_embed, self.tgt_embed} - {None}:
                table.weight.div_(self.embed_scale)
        self.lm_head = nn.Linear(D, c.target_vocab, bias=False)
        if c.tie_output:
            self.lm_head.weight = self.tgt_embed.weight
        if c.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(c.target_vocab))
        else:
            self.final_logits_bias = None
        self._bias_checked: tuple = ((), False)  # (the bias's stamp, whether it is all zero)
        self.generation_config = GenerationConfig(
            eos_token_id=c.eos_token_id,
            pad_token_id=c.pad_token_id,
            decoder_start_token_id=c.decoder_start_token_id,
        )
        self.tokenizer: Any = None  # set by load/from_hf when the folder has tokenizer files
        self.quantized: str | None = None  # "int8" for a copy made by quantize()

    # ---- encoder -------------------------------------------------------------------------

    def _check_source(self, src: Tensor, src_mask: Tensor | None) -> None:
        c = self.config
        if not isinstance(src, Tensor):
            raise ValueError(f"src must be a torch.Tensor, got {type(src).__name__}")
        reads_ids = getattr(self.front_end, "reads_ids", self.front_end is None)
        if src.is_floating_point():
            if reads_ids:
                raise ValueError(
                    f"src is a float tensor {format_shape(src.shape)} but this model reads token "
                    f"ids; "
                    f"set ModelConfig.source_features or pass a front_end for features"
                )
            if src.dim() != 3:
                raise ValueError(
                    f"src has shape {format_shape(src.shape)}; expected features (B, S, F)"
                )
        else:
            if not reads_ids:
                raise ValueError(
                    f"src has dtype {src.dtype}; this model reads float features (B, S, F)"
                )
            expected = "(B, S)" if self.front_end is None else "(B, N, L)"
            if src.dtype not in (torch.long, torch.int32, torch.int64) or (
                self.front_end is None and src.dim() != 2
            ):
                raise ValueError(
                    f"src has shape {format_shape(src.shape)} and dtype {src.dtype}; "
                    f"expected token ids {expected} of torch.long"
                )
            if (
                self.front_end is None
                and src.numel()
                and (int(src.min()) < 0 or int(src.max()) >= c.vocab_size)
            ):
                raise ValueError(
                    f"src holds token ids outside [0, {c.vocab_size}) "
                    f"(min {int(src.min())}, max {int(src.max())})"
                )
        if isinstance(self.front_end, FrontEnd):
            self.front_end.check(src)
        B, S = src.shape[:2]
        if (
            self.encoder_positions is not None
            and not isinstance(self.front_end, FrontEnd)
            and S > self.encoder_positions.max_positions
        ):
            raise ValueError(
                f"src has S={S} positions; this model has max_positions="
                f"{self.encoder_positions.max_positions}"
            )
        if src_mask is not None and (
            not isinstance(src_mask, Tensor)
            or src_mask.dtype != torch.bool
            or tuple(src_mask.shape) != (B, S)
        ):
            got = (
                f"shape {format_shape(src_mask.shape)} and dtype {src_mask.dtype}"
                if isinstance(src_mask, Tensor)
                else type(src_mask).__name__
            )
            raise ValueError(
                f"src_mask has {got}; expected (B, S) = ({B}, {S}) of torch.bool, True = real token"
            )

    def encode(self, src: Tensor, src_mask: Tensor | None = None, *, return_mask: bool = False):
        """src: token ids (B, S), features (B, S, F) or what the front end reads (images
        (B, W, H), log-mel frames, passages (B, N, L)); src_mask (B, S) bool, True = real.

        Returns the encoder output, the memory (B, S', D); with return_mask, the pair
        (memory, memory mask (B, S') or None). S' == S except after a front end that
        changes the length (the audio and image front ends subsample): pass the memory
        mask, not src_mask, to decode then.
        """
        self._check_source(src, src_mask)
        memory, mask = self._encoder(src, src_mask)
        return (memory, mask) if return_mask else memory

    def _encoder(self, src: Tensor, src_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """encode after its checks: (memory, memory mask)."""
        add_positions = True
        if isinstance(self.front_end, FrontEnd):
            x, src_mask = self.front_end(src, src_mask)  # (B, S', D)
            add_positions = not self.front_end.adds_positions
        elif self.front_end is not None:
            x = self.front_end(src)  # (B, S, D)
        else:
            x = self.src_embed(src) * self.embed_scale  # (B, S, D)
        if self.encoder_positions is not None and add_positions:
            if x.shape[1] > self.encoder_positions.max_positions:
                raise ValueError(
                    f"the encoder input has {x.shape[1]} positions; this model has "
                    f"max_positions={self.encoder_positions.max_positions}"
                )
            x = x + self.encoder_positions(0, x.shape[1])
        if self.encoder_embed_norm is not None:
            x = self.encoder_embed_norm(x)
        x = dropout(x, self.config.dropout, self.training)
        # a mask with no padding is left out of the layers' attention (no mask to build)
        layer_mask = None if src_mask is None or bool(src_mask.all()) else src_mask
        for layer in self.encoder_layers:
            x = layer(x, layer_mask)
        x = x if self.encoder_norm is None else self.encoder_norm(x)
        return x, src_mask

    # ---- decoder -------------------------------------------------------------------------

    def _embed_target(self, tgt_ids: Tensor, start: int) -> Tensor:
        c = self.config
        if not isinstance(tgt_ids, Tensor) or tgt_ids.dim() != 2 or tgt_ids.is_floating_point():
            shape = (
                format_shape(tgt_ids.shape)
                if isinstance(tgt_ids, Tensor)
                else type(tgt_ids).__name__
            )
            raise ValueError(f"tgt_ids has shape {shape}; expected token ids (N, T)")
        T = tgt_ids.shape[1]
        if tgt_ids.numel() and (int(tgt_ids.min()) < 0 or int(tgt_ids.max()) >= c.target_vocab):
            raise ValueError(f"tgt_ids holds token ids outside [0, {c.target_vocab})")
        if self.decoder_positions is not None and start + T > self.decoder_positions.max_positions:
            raise ValueError(
                f"the target reaches position {start + T}; this model has max_positions="
                f"{self.decoder_positions.max_positions}"
            )
        x = self.tgt_embed(tgt_ids) * self.embed_scale  # (N, T, D)
        if self.decoder_positions is not None:
            x = x + self.decoder_positions(start, T)
        if self.decoder_embed_norm is not None:
            x = self.decoder_embed_norm(x)
        return dropout(x, c.dropout, self.training)

    def _logits_bias(self) -> Tensor | None:
        """final_logits_bias, or None where it is all zeros (transformers' Marian keeps
        one; adding it is a pass over the logits that changes none), looked at once per
        version of the buffer. A compiled graph keeps it (there it is fused for free)."""
        bias = self.final_logits_bias
        if bias is None or torch.compiler.is_compiling():
            return bias
        stamp = (id(bias), bias.data_ptr(), *_stamp(bias))
        if self._bias_checked[0] != stamp:
            self._bias_checked = (stamp, not bool(bias.any()))
        return None if self._bias_checked[1] else bias

    def _logits(self, x: Tensor) -> Tensor:
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        bias = self._logits_bias()
        if type(self.lm_head) is nn.Linear:  # the bias added in the product (one addmm)
            return F.linear(x, self.lm_head.weight, bias)  # (N, T, V)
        logits = self.lm_head(x)  # an int8 copy's layer
        return logits if bias is None else logits + bias

    def _encoder_memories(self, src: Tensor) -> tuple[Tensor, tuple[tuple[Tensor, Tensor], ...]]:
        """Token ids (B, S) without padding, checked, to (memory, each decoder layer's cross-
        attention (key, value)): what generate(compile=True) compiles (model.compiled)."""
        memory, _ = self._encoder(src, None)
        return memory, tuple((m.key, m.value) for m in self.project_memories(memory))

    def project_memories(
        self, memory: Tensor, src_mask: Tensor | None = None
    ) -> tuple[CrossAttentionMemory, ...]:
        """Each decoder layer's cross-attention keys and values of the memory (B, S, D)."""
        return tuple(
            layer.cross_attn.project_memory(memory, src_mask) for layer in self.decoder_layers
        )

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        *,
        src_mask: Tensor | None = None,
        return_weights: ReturnWeights = False,
    ):
        """Logits (B, T, V) of every target position, teacher-forced (no cache).

        return_weights (as in attention()): True also returns each layer's cross-attention
        weights (B, H, T, S); "mean" their head mean (B, T, S).
        """
        memories = self.project_memories(memory, src_mask)
        _check_return_weights(return_weights)
        x = self._embed_target(tgt_ids, 0)
        maps = []
        for layer, mem in zip(self.decoder_layers, memories, strict=True):
            x, _, w = layer(x, mem, return_weights=return_weights)
            maps.append(w)
        logits = self._logits(x)
        return (logits, tuple(maps)) if return_weights else logits

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        *,
        src_mask: Tensor | None = None,
        return_weights: ReturnWeights = False,
    ):
        """Logits (B, T, V) for target inputs tgt_ids (B, T) given the source; with
        return_weights, also each layer's cross-attention weights (as decode)."""
        memory, memory_mask = self.encode(src_ids, src_mask, return_mask=True)
        return self.decode(tgt_ids, memory, src_mask=memory_mask, return_weights=return_weights)

    # ---- cached decoding -----------------------------------------------------------------

    def start_decoding(
        self,
        memory: Tensor,
        src_mask: Tensor | None = None,
        *,
        rows_per_source: int = 1,
        max_length: int,
    ) -> DecoderState:
        """A fresh DecoderState for memory (B, S, D): cross K/V projected once per source,
        self-attention caches of max_length positions for B * rows_per_source rows."""
        memories = self.project_memories(memory, src_mask)
        return self._start_decoding(memories, memory.shape[0] * rows_per_source, max_length)

    def _start_decoding(
        self, memories: tuple[CrossAttentionMemory, ...], N: int, max_length: int, steps=True
    ) -> DecoderState:
        """start_decoding from the memories; steps=False leaves out the layers read for the
        eager lean steps (compiled steps read their own)."""
        key = memories[0].key if memories else None
        dtype = None if key is None else key.dtype
        device = None if key is None else key.device
        caches = tuple(
            layer.self_attn.new_cache(N, max_length, dtype=dtype, device=device)
            for layer in self.decoder_layers
        )
        if not steps:
            return DecoderState(memories, caches, 0)
        layers = tuple(LayerStep.of(layer, N) for layer in self.decoder_layers)
        output = layer_step(self.lm_head, N)
        bias = self._logits_bias()
        if bias is not None:
            head = output

            def output(x: Tensor) -> Tensor:
                return head(x) + bias

        return DecoderState(memories, caches, 0, layers, output)

    def decode_step(
        self, tgt_ids: Tensor, state: DecoderState, *, return_weights: ReturnWeights = False
    ):
        """Consume tgt_ids (N, t), the next t target tokens of every row.

        Returns (logits (N, t, V), new state, per layer cross-attention weights (as in
        decode) or None).
        """
        _check_return_weights(return_weights)
        x = self._embed_target(tgt_ids, state.length)
        caches, maps = [], []
        layers = zip(self.decoder_layers, state.memories, state.caches, strict=True)
        for layer, mem, cache in layers:
            x, cache, w = layer(x, mem, cache=cache, return_weights=return_weights)
            caches.append(cache)
            maps.append(w)
        length = state.length + tgt_ids.shape[1]
        new_state = dataclasses.replace(state, caches=tuple(caches), length=length)
        return self._logits(x), new_state, (tuple(maps) if return_weights else None)

    def _decode_one(self, tgt_ids: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """decode_step for one token of every row (N, 1) inside generate, which checked its
        inputs once: the same arithmetic without per-step checks, on rows (N, D); the
        decoder layers make no module calls (see layers.decode_one), only the positions and
        the embedding and final norms do. Returns (logits (N, V), new state)."""
        x = self._embed_one(tgt_ids[:, 0], state.length)  # (N, D)
        caches = []
        for step, memory, cache in zip(state.steps, state.memories, state.caches, strict=True):
            x, cache = decode_one(step, x, memory, cache)
            caches.append(cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        logits = state.output(x)  # (N, V), the final logits bias included
        caches, length = tuple(caches), state.length + 1
        return logits, DecoderState(state.memories, caches, length, state.steps, state.output)

    def _embed_one(self, tokens: Tensor, position: int | Tensor) -> Tensor:
        """The decoder's input (N, D) for tokens (N,) at one position (an int, or a tensor
        (1,) in a compiled step)."""
        x = F.embedding(tokens, self.tgt_embed.weight)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        if self.decoder_positions is not None:
            if isinstance(position, int):
                x = x + self.decoder_positions(position, 1)
            else:
                x = x + self.decoder_positions.at(position)
        if self.decoder_embed_norm is not None:
            x = self.decoder_embed_norm(x)
        return x

    def _step_at(self, tokens: Tensor, position: Tensor, memories, caches) -> Tensor:
        """_decode_one at a position held in a tensor (1,), for generate(compile=True)
        (model.compiled): tokens (N,); every layer's key and value written into its cache
        at `position` and the whole cache attended under the mask of the filled positions,
        so that the shapes are the same at every step. Returns logits (N, V)."""
        x = self._embed_one(tokens, position)
        for layer, memory, cache in zip(self.decoder_layers, memories, caches, strict=True):
            x, _ = decode_one(LayerStep.of(layer, traced=True), x, memory, cache, position)
        return self._logits(x)

    def _greedy_at(
        self, ids, position, memories, caches, unfinished, bans, eos, pad, *, steps=1
    ) -> Tensor:
        """`steps` greedy steps from the tokens ids[:, position] (ids (N, W), position
        (1,)), for generate(compile=True) (model.compiled): each step's logits (as
        _step_at) after the bans and forced tokens (processors.BanTable) give its tokens,
        pad where a row had ended (eos (V,) True at the end tokens), written into ids at
        the next column. A step past the caches' last position runs there (its tokens land
        in columns past the search's; W leaves room for them). unfinished (N,) and position
        are updated in place. Returns the number of steps after which no row was left
        unfinished (a long tensor; steps + 1 where a row still is)."""
        last = caches[0].key.shape[2] - 1
        tokens = ids.index_select(1, position).view(-1)
        alive = unfinished
        ended = torch.full((), steps + 1, dtype=torch.long, device=ids.device)
        for i in range(steps):
            at = (position + i).clamp(max=last)
            scores = bans.apply(self._step_at(tokens, at, memories, caches).float(), at + 1)
            best = scores.argmax(-1)
            tokens = torch.where(alive, best, pad)
            alive = alive & ~eos[best]  # (a row that had ended stays ended)
            ids.index_copy_(1, position + i + 1, tokens[:, None])
            ended = torch.where((ended > steps) & ~alive.any(), i + 1, ended)
        unfinished.copy_(alive)
        position.add_(steps)
        return ended

    def _beam_at(self, position, memories, caches, beams, bans, rule, rows, *, steps=1) -> Tensor:
        """`steps` beam search steps from `position` (1,), for generate(compile=True)
        (model.compiled): each feeds the running rows' tokens at its position (as _step_at),
        takes their log-probabilities after the bans and forced tokens
        (processors.BanTable) and advances the beams (search.beam_advance). No cache is
        reordered: rows (N, max_length) says which cache row holds each row's key and value
        at each position (KVCache.rows), and a row that continues another takes that row's
        rows. Once the search is done, the steps left in the call keep its state (a step
        past the last position runs there). The beams and rows are written in place.
        Returns whether the search is done (a bool tensor)."""
        N = caches[0].key.shape[0]
        last = beams.running.shape[-1] - 2  # the last position whose next token fits
        own = torch.arange(N, device=rows.device)[:, None]
        caches = tuple(dataclasses.replace(c, rows=rows) for c in caches)
        state, done = beams, torch.zeros((), dtype=torch.bool, device=rows.device)
        for i in range(steps):
            at = (position + i).clamp(max=last)
            rows.index_copy_(1, at, own)  # each row writes its new key and value itself
            tokens = state.running.view(N, -1).index_select(1, at).view(N)
            logits = self._step_at(tokens, at, memories, caches)
            log_probs = bans.apply(torch.log_softmax(logits.float(), -1), at + 1)
            new, indices, ended = beam_advance(state, log_probs, at + 1, rule)
            rows.copy_(torch.where(done, rows, rows.index_select(0, indices)))
            state, done = state.unless(done, new), done | ended
        beams.copy_(state)
        return done

    # ---- generation ----------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        src_ids: Tensor,
        *,
        src_mask: Tensor | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        return_weights: ReturnWeights = False,
        generation_config: GenerationConfig | None = None,
        decoder_input_ids: Tensor | None = None,
        compile: bool = False,
        **overrides: Any,
    ):
        """Generate targets for src_ids (B, S) (or features (B, S, F)).

        Settings come from `generation_config` (default: self.generation_config, which
        from_hf reads from the folder's generation_config.json) with keyword overrides,
        e.g. do_sample=True, top_p=0.9, length_penalty=0.6, no_repeat_ngram_size=3.

        Returns a LongTensor (B * R, 1 + N) that begins with the decoder start token, finished
        rows padded after their end token (transformers' layout; R = num_return_sequences).
        decoder_input_ids (B, P): a prompt the output continues (it must begin with the
        decoder start token; the rows of a batch share its length P); the returned rows
        begin with it, and the attention maps cover only the generated tokens.
        With return_weights True (every head) or "mean" (their mean), a GenerationOutput that
        also holds the cross-attention weights of the generated tokens, collected during the
        search (no re-run).
        compile=True: the decoding steps (and the encoder, for token ids without
        padding) run a graph compiled with torch.compile (weights
        frozen into it; on a CPU, inductor's own matrix-product kernels where they time
        faster, a C++ wrapper and the attention formula fused; model.compiled): greedy
        search takes several steps per call, picking the tokens inside the graph, and beam
        search takes each step with its search in one call, where their processors all ban
        or force tokens (min length, suppressed or bad single tokens, forced first or last
        token); one step per call otherwise, as sampling does. A graph is made on the first
        call (tens of seconds on a CPU; a C++ compiler is needed there) and again after the
        weights change or a size changes for the first time (model.compiled). The same
        search; logits to float rounding, so tokens may differ where two are near-tied.
        Where generate takes its checked steps (return_weights, training mode, a source
        without a real position), they run uncompiled. An int8 copy (quantize) compiles its
        steps with their own int8 product (model.quantize), faster than its eager steps.
        """
        config = generation_settings(
            generation_config or self.generation_config, max_new_tokens, num_beams, overrides
        )
        stepper, start, B = self.stepper(
            src_ids, src_mask, config, decoder_input_ids, return_weights, compile
        )
        result = search(stepper, start, config, B)
        if not return_weights:
            return result.sequences
        maps = None
        if result.extras is not None:  # (B*R, N, L, ...) -> per layer (B*R, N, ...)
            maps = tuple(result.extras.unbind(2))
        return GenerationOutput(result.sequences, result.scores, maps)

    def stepper(
        self,
        src_ids: Tensor,
        src_mask: Tensor | None,
        config: GenerationConfig,
        decoder_input_ids: Tensor | None = None,
        return_weights: ReturnWeights = False,
        compile: bool = False,
    ):
        """What generate searches with: (the search's Stepper over this model's cached
        decoder for src_ids, the start tokens (B * rows, 1) after any prompt, B). The
        encoder runs here; a prompt but its last token is fed here (the search feeds that)."""
        if not isinstance(compile, bool):
            raise ValueError(f"compile={compile!r}; expected True or False")
        _check_return_weights(return_weights)
        self._check_source(src_ids, src_mask)
        unpadded = src_mask is None or bool(src_mask.all())
        checked = return_weights or self.training  # steps that run uncompiled
        if compile and unpadded and self.front_end is None and not checked:
            memory, projected = compiled_encoder(self)(src_ids)
            memory_mask = src_mask
            memories = tuple(CrossAttentionMemory(k, v) for k, v in projected)
        else:
            memory, memory_mask = self._encoder(src_ids, src_mask)
            memories = self.project_memories(memory, memory_mask)
        # steps without per-step checks, unless maps are collected, dropout is on or a
        # source has no real position (SDPA would give NaN where attention() gives zeros)
        lean = not checked and (memory_mask is None or bool(memory_mask.any(-1).all()))
        compiled = compile and lean and len(self.decoder_layers) > 0  # (steps to compile)
        B = memory.shape[0]
        rows = config.num_beams if config.num_beams > 1 else config.num_return_sequences
        start_id = config.decoder_start_token_id
        if start_id is None:
            start_id = self.config.decoder_start_token_id
        if decoder_input_ids is None:
            start = torch.full((B, 1), start_id, dtype=torch.long, device=memory.device)
        else:
            start = decoder_input_ids.to(memory.device)
            if start.dim() != 2 or start.shape[0] != B or start.is_floating_point():
                raise ValueError(
                    f"decoder_input_ids has shape {format_shape(start.shape)}; expected "
                    f"token ids (B, P) with B = {B}"
                )
        max_length = config.total_length(start.shape[1])
        state = self._start_decoding(memories, B * rows, max_length, steps=not compiled)
        start = start.repeat_interleave(rows, dim=0)  # (B * rows, P)
        if start.shape[1] > 1:  # feed the prompt but its last token (the search feeds that)
            _, state, _ = self.decode_step(start[:, :-1], state)
        if compiled:
            return _CompiledStepper(self, _with_masks(state)), start, B
        return _ModelStepper(self, state, return_weights, lean), start, B

    def train(self, mode: bool = True) -> EncoderDecoder:
        """nn.Module.train; the packed weights of decoding steps are made again after it
        (model.packing), so a change of weights that nothing else shows is picked up."""
        forget()
        return super().train(mode)

    def quantize(self, mode: str = "int8") -> EncoderDecoder:
        """An int8 copy for CPU inference (model.quantize): linear layers with int8 weights
        and per-call int8 inputs; this model is unchanged. The copy cannot be saved. An
        int8 model returns itself."""
        if mode != "int8":
            raise ValueError(f"quantize({mode!r}); the one mode is 'int8'")
        if self.quantized == mode:
            return self
        from .quantize import quantize_int8

        return quantize_int8(self)

    def transcribe(
        self,
        audio,
        sampling_rate: int,
        *,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        language: str | None = None,
        task: str = "transcribe",
        word_timestamps: bool = False,
    ):
        """Speech to text (speech models only: Whisper and xattn's own): audio (N,) mono
        samples at any sampling_rate. Returns a Transcription with .text (None without a
        tokenizer), .tokens (after the decoder prompt, end token excluded), and with
        word_timestamps .token_times (seconds) and .words ([(word, start, end)]). See
        xattn.transcription."""
        from ..transcription import transcribe

        return transcribe(
            self,
            audio,
            sampling_rate,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            language=language,
            task=task,
            word_timestamps=word_timestamps,
        )

    # ---- save / load ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write config.json, model.safetensors, generation_config.json and the tokenizer
        files into a folder; written to a temporary folder first and renamed into place,
        so a failure never leaves a half-written or clobbered model."""
        from safetensors.torch import save_model

        if self.quantized is not None:
            raise ValueError(
                f"this is a {self.quantized} copy for inference: save the float model and "
                f"quantize after loading it"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            self.config.save(tmp / CONFIG_FILE)
            self.generation_config.save(tmp / GENERATION_FILE)
            save_model(self, str(tmp / WEIGHTS_FILE))
            if self.tokenizer is not None:
                self.tokenizer.save(tmp)
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | Path, *, front_end: nn.Module | None = None) -> EncoderDecoder:
        """A model saved by `save` (no pickle anywhere), in eval mode."""
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise ValueError(f"{path}: not an xattn model folder ({name} is missing)")
        config = ModelConfig.load(path / CONFIG_FILE)
        model = cls(config, front_end=front_end)
        try:
            missing, unexpected = load_model(model, str(path / WEIGHTS_FILE), strict=False)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"{path / WEIGHTS_FILE}: unreadable weights ({err})") from err
        if missing or unexpected:
            raise ValueError(
                f"{path / WEIGHTS_FILE} does not match {path / CONFIG_FILE}: missing "
                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        if (path / GENERATION_FILE).is_file():
            model.generation_config = GenerationConfig.load(path / GENERATION_FILE)
            heads = model.generation_config.alignment_heads
            if heads is not None:
                _check_heads(heads, config, f"{path / GENERATION_FILE}: alignment_heads")
        from ..data.tokenizers import load_tokenizer

        model.tokenizer = load_tokenizer(path)
        _check_tokenizer(model.tokenizer, config, path)
        return model.eval()  # like transformers' from_pretrained: ready for inference

    def set_alignment_heads(self, heads: Sequence[Sequence[int]]) -> None:
        """Record the cross-attention heads whose mean attention aligns output with input,
        as (layer, head) pairs counting from 0 (Whisper's set_alignment_heads); they go into
        generation_config.json with the model, and attention pictures draw their mean."""
        heads = tuple(tuple(h) for h in heads)
        _check_heads(heads, self.config, "alignment heads")
        self.generation_config = self.generation_config.replace(alignment_heads=heads)

    @classmethod
    def from_hf(cls, path: str | Path) -> EncoderDecoder:
        """A Marian, BART or Whisper folder written by transformers' save_pretrained."""
        from ..hf import load_hf

        return load_hf(cls, path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> EncoderDecoder:
        """A model folder of either kind: written by `save` (xattn) or by transformers'
        save_pretrained (from_hf). A name that is not a local folder ("openai/whisper-tiny")
        is downloaded from the Hugging Face hub first when the optional huggingface_hub is
        installed. ValueError naming the folder when it is none of these."""
        from ..utils import read_json

        path = Path(path)
        if not path.exists():
            path = _download(str(path))
        if not path.is_dir():
            raise ValueError(f"{path}: no such model folder")
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"{path}: {CONFIG_FILE} is missing; not a model folder")
        if "model_type" in read_json(path / CONFIG_FILE):
            return cls.from_hf(path)
        return cls.load(path)


# the files a model folder needs (weights in safetensors only: never a pickle)
_HUB_FILES = ["*.json", "*.safetensors", "*.spm", "*.txt"]


def _download(name: str) -> Path:
    """A hub repository's model files, downloaded (or from the local cache)."""
    if name.count("/") != 1 or name.startswith(("/", ".")):
        raise ValueError(f"{name}: no such model folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ValueError(
            f"{name}: no such model folder; to download it from the Hugging Face hub, "
            f"pip install huggingface_hub"
        ) from err
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=_HUB_FILES))
    except Exception as err:  # the hub client raises its own types (offline, not found, ...)
        raise ValueError(
            f"{name}: no such local folder, and the hub did not have it ({err})"
        ) from err


def _check_heads(heads, config: ModelConfig, where: str) -> None:
    """(layer, head) pairs counting from 0 within the decoder's layers and heads."""
    layers, per_layer = config.decoder_layers, config.num_heads
    if not heads or any(
        len(h) != 2 or not (0 <= h[0] < layers and 0 <= h[1] < per_layer) for h in heads
    ):
        raise ValueError(
            f"{where} {[list(h) for h in heads]}: expected (layer, head) pairs within the "
            f"decoder's {layers} layers x {per_layer} heads, counting from 0"
        )


def _check_tokenizer(tokenizer, config: ModelConfig, path: Path) -> None:
    """A folder's tokenizer must fit its model: same vocabulary sizes."""
    sizes = (
        getattr(tokenizer, "source_vocab_size", None),
        getattr(tokenizer, "target_vocab_size", None),
    )
    if sizes[0] is None:
        return  # a tokenizer without vocabulary sizes (Marian checks its own ids)
    expected = (config.vocab_size, config.target_vocab)
    if sizes != expected:
        raise ValueError(
            f"{path}: the tokenizer has {sizes[0]} source and {sizes[1]} target tokens but "
            f"the model expects {expected[0]} and {expected[1]}; tokenizer and model do not "
            f"match"
        )


def _check_return_weights(return_weights) -> None:
    if return_weights not in (False, True, "mean"):
        raise ValueError(f"return_weights={return_weights!r}; expected False, True or 'mean'")


def generation_settings(
    config: GenerationConfig, max_new_tokens: int | None, num_beams: int | None, overrides: dict
) -> GenerationConfig:
    """config with generate's keyword settings applied (None leaves a setting as it is)."""
    if max_new_tokens is not None:
        overrides = {**overrides, "max_new_tokens": max_new_tokens}
    if num_beams is not None:
        overrides = {**overrides, "num_beams": num_beams}
    return config.replace(**overrides) if overrides else config


class _ModelStepper:
    """The search's view of a model: one decode_step per call, the state kept here."""

    def __init__(self, model, state: DecoderState, weights: ReturnWeights, lean=False):
        self.model, self.state, self.weights, self.lean = model, state, weights, lean

    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.lean:
            logits, self.state = self.model._decode_one(tokens, self.state)
            return logits, None
        logits, self.state, maps = self.model.decode_step(
            tokens, self.state, return_weights=self.weights
        )
        extra = None
        if maps is not None:  # per layer (N, 1, S) or (N, H, 1, S) -> (N, L, S) / (N, L, H, S)
            extra = torch.stack([m.squeeze(-2) for m in maps], dim=1)
        return logits[:, -1], extra

    def reorder(self, indices: Tensor) -> None:
        self.state = self.state.reorder(indices)


def _with_masks(state: DecoderState) -> DecoderState:
    """state with an all-True mask in each memory that has none (no padding) and its keys
    and values contiguous, so that batches with and without padding, their memories
    projected eagerly (views of one product) or in the encoder's graph, run one graph of
    compiled steps (a view and a tensor of its own meet different guards)."""
    key = state.memories[0].key
    full = torch.ones(key.shape[0], key.shape[2], dtype=torch.bool, device=key.device)
    memories = tuple(
        CrossAttentionMemory(
            m.key.contiguous(), m.value.contiguous(), full if m.mask is None else m.mask
        )
        for m in state.memories
    )
    return dataclasses.replace(state, memories=memories)


class _CompiledStepper(_ModelStepper):
    """The steps of generate(compile=True) (model.compiled): one step per call of the
    compiled _step_at, several greedy steps per call of the compiled _greedy_at
    (a search.GreedyStepper), or a beam search step with its search per call of the
    compiled _beam_at (a search.BeamStepper). Each graph is given the same tensors at
    every call (their values copied in), which the guards of its first call checked, and
    the same caches: a graph reads the position from its tensor, not the caches' lengths,
    so the state's lengths are brought up to date only where the state is read."""

    def __init__(self, model, state: DecoderState) -> None:
        self.ahead = 0  # steps taken since the state's lengths were last brought up to date
        super().__init__(model, state, False, lean=True)
        self.vocabulary = model.config.target_vocab
        self.position = torch.tensor([state.length], device=state.caches[0].key.device)
        self.tokens: Tensor | None = None  # the steps' input, the same tensor every call
        self.compiled_step = self.compiled_greedy = self.compiled_beam = None
        self.rows: Tensor | None = None  # the cache rows of beam search (KVCache.rows)

    @property
    def state(self) -> DecoderState:
        if self.ahead:
            state = self._state
            length = min(state.length + self.ahead, state.caches[0].max_length)
            caches = tuple(dataclasses.replace(c, length=length) for c in state.caches)
            self.state = dataclasses.replace(state, caches=caches, length=length)
        return self._state

    @state.setter
    def state(self, state: DecoderState) -> None:
        self._state, self.ahead = state, 0

    def _advance(self, steps: int) -> None:
        self.position += steps
        self.ahead += steps

    def _input(self, tokens: Tensor) -> Tensor:
        if self.tokens is None:
            self.tokens = tokens.new_empty(tokens.shape[0])
        return self.tokens.copy_(tokens)

    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.compiled_step is None:
            self.compiled_step = compiled_step(self.model)
        state = self._state
        logits = self.compiled_step(
            self._input(tokens[:, 0]), self.position, state.memories, state.caches
        )
        self._advance(1)
        return logits, None

    def beam_steps(self, beams, bans, rule) -> Tensor:
        if self.compiled_beam is None:
            self.compiled_beam = compiled_beam(self.model)
            N, L = beams.running.shape[0] * beams.running.shape[1], beams.running.shape[2]
            self.rows = torch.arange(N, device=beams.running.device)[:, None].repeat(1, L)
        state = self._state
        done = self.compiled_beam(
            self.position, state.memories, state.caches, beams, bans, rule, self.rows
        )
        self._advance(self.compiled_beam.steps)
        return done

    @property
    def steps_per_call(self) -> int:
        if self.compiled_greedy is None:
            self.compiled_greedy = compiled_greedy(self.model)
        return self.compiled_greedy.steps

    def greedy_steps(self, ids: Tensor, unfinished: Tensor, bans, eos: Tensor, pad: Tensor):
        steps = self.steps_per_call
        state = self._state
        ended = self.compiled_greedy(
            ids, self.position, state.memories, state.caches, unfinished, bans, eos, pad
        )
        self.ahead += steps  # (the graph moved the position)
        return ended
