"""Speech to text with a speech model: Whisper (imported with from_hf) or xattn's own.

    result = model.transcribe(audio, sampling_rate, word_timestamps=True)
    result.text, result.tokens, result.token_times, result.words

The audio is resampled to the model's rate and turned into its log-mel frames (Whisper's
features, or the speech task's). For xattn's own models it is first brought within what
their training utterances hold (data.speech): the level of their words, the silence before
the first word and after the last, pauses between words no longer than theirs, and a
noise floor (_as_trained); times are reported on the recording's own clock. A recording
trimmed to the word, a quiet one, or one with the long pauses people leave between digits
is otherwise far from anything they heard. Audio longer than one window (Whisper: 30 s) is
cut into consecutive windows, each transcribed on its own, the times offset by the
window's start.

Whisper's decoder prompt follows transformers' `generate`: the start token, the language
(given, or detected from the first decoder step over the language tokens), the task, and
no-timestamps. Token times follow transformers' `return_token_timestamps`: the alignment
heads' cross-attention of the rows where the generated tokens are the decoder's input,
aligned to the audio frames by dynamic time warping (xattn.alignment.token_times). xattn's
own models read each word's time from the row that predicts it, as their alignment heads
were chosen to do. An Ensemble of xattn's speech models (model.ensemble) transcribes the
same way with its members' mean next-token probability, and reads the word times from the
alignment heads of all members together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .alignment import group_words, token_times
from .data.audio import SPEECH, LogMelSpec, log_mel, resample, whisper_spec
from .data.speech import EDGE_SILENCE, MAX_WORDS, NOISE, PAUSE, WORD_PEAK

__all__ = ["Transcription", "transcribe"]

FRAMES_PER_POSITION = {"whisper": 2, "audio": 4}  # log-mel frames per encoder position
QUIET_DB = 35.0  # a 10 ms frame this far under the loudest is silence,
FLOOR_DB = 10.0  # and so is one within this of the noise floor (the quietest tenth's level),
LOUD_DB = 20.0  # but never one within this of the loudest; always one within NEAR_DB of
NEAR_DB = 6.0  # the quietest (a noisy recording's background)
DEAD_DB = 30.0  # a frame this far under the quietest tenth's level is digital silence
DC_SHARE = 0.005  # a mean over this share of the peak is a DC offset (training's are under)
WORD_GAP = 0.15  # seconds of silence that part two stretches of sound as two words
CLICK = 0.05  # seconds: sound no longer than this before the first word or after the last,
CLICK_GAP = 0.1  # this far from the words, is a click (a tap on the record button)
LONG_PAUSE = 0.3  # seconds of silence between words (their quiet edges too) cut down to
BESIDE = PAUSE[1] / 2  # ... this much beside each word: training's longest pause in all


@dataclass(frozen=True)
class Transcription:
    """text (None without a tokenizer); tokens: generated ids after the decoder prompt, end
    token excluded; token_times: start of each token in seconds (with word_timestamps);
    words: (word, start, end) (with word_timestamps and a tokenizer); language: the
    language token Whisper's prompt used ("en"), or None."""

    text: str | None
    tokens: list[int]
    token_times: list[float] | None = None
    words: list[tuple[str, float, float]] | None = None
    language: str | None = None


def feature_spec(model) -> LogMelSpec:
    """The log-mel preset a speech model reads; ValueError for other models."""
    kind = model.config.front_end
    if kind == "whisper":
        return whisper_spec(model.config.source_features)
    if kind == "audio":
        if model.config.source_features != SPEECH.n_mels:
            raise ValueError(
                f"this speech model reads {model.config.source_features} mel bins; xattn's "
                f"speech features have {SPEECH.n_mels}"
            )
        return SPEECH
    raise ValueError(
        f"transcribe needs a speech model (Whisper, or one trained with --task speech); this "
        f"one reads {kind or 'token ids'}"
    )


def _as_samples(audio) -> np.ndarray:
    samples = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio)
    if samples.ndim != 1 or samples.size == 0 or not np.issubdtype(samples.dtype, np.number):
        raise ValueError(
            f"audio has shape {samples.shape} and dtype {samples.dtype}; expected mono "
            f"samples (N,) with N > 0"
        )
    samples = samples.astype(np.float32)
    if not np.isfinite(samples).all():
        raise ValueError("audio holds NaN or infinite samples")
    return samples


def _as_trained(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The recording brought within what an xattn speech model heard in training
    (data.speech), what already lies within left alone: its peak scaled to the middle of
    WORD_PEAK; the silence before the first word or after the last, when shorter than
    EDGE_SILENCE allows, made the middle of that range (added silence: noise at the level
    of the recording's quietest 10 ms), when longer, cut to its top (a word's quiet onset,
    the /s/ of "six", can lie under the level rules and make the edge seem longer than it
    is: cut to the middle, the onset was left at the recording's start); each pause
    between words longer than LONG_PAUSE cut to 2 * BESIDE, the top of training's pauses
    (its middle removed, the words' quiet edges kept);
    background noise at least NOISE's lowest. Digital silence (a codec's priming, a
    recorder's first moments: DEAD_DB under the recording's background) is heard as that
    background, never as a silence the noise then breaks; so is a click before the first
    word or after the last (see CLICK); a DC offset is removed. Returns (samples, edits):
    edits (k, 2) holds where each edit lies on the new clock and how many seconds it
    removed (negative: added)."""
    frame = max(1, sample_rate // 100)
    count = len(samples) // frame
    samples = _without_dc(samples, frame)
    if not np.abs(samples).max() > 0 or count == 0:
        return samples, np.zeros((0, 2))
    samples = _without_clicks(samples, frame, round(sample_rate / frame))
    samples = samples * (sum(WORD_PEAK) / 2 / float(np.abs(samples).max()))
    rms, dead, near_dead, is_loud = _frame_levels(samples, frame)
    if not is_loud.any():  # one steady sound (a tone, only noise): all of it heard as sound
        is_loud = ~dead
    loud = np.flatnonzero(is_loud)
    background = rms[~is_loud & ~near_dead]
    quietest = max(float(background.min()) if len(background) else 0.0, NOISE[0])
    noise = np.random.default_rng(0)  # the silence added, and what fills digital silence
    if dead.any():
        samples = samples.copy()
        for i in np.flatnonzero(dead):
            end = len(samples) if i == count - 1 else (i + 1) * frame
            samples[i * frame : end] = noise.normal(0, quietest, end - i * frame)
    quiet = np.concatenate([background, np.full(int(dead.sum()), quietest)])
    own = float(np.sqrt(np.mean(quiet**2))) if len(quiet) else 0.0
    n, middle = len(samples), round(sum(EDGE_SILENCE) / 2 * sample_rate)
    low, high = (round(s * sample_rate) for s in EDGE_SILENCE)
    first, last = loud[0] * frame, (loud[-1] + 1) * frame
    lead = middle if first < low else min(first, high)
    tail = middle if n - last < low else min(n - last, high)
    beside = round(BESIDE * sample_rate)
    long = np.flatnonzero((np.diff(loud) - 1) * frame > LONG_PAUSE * sample_rate)
    spans = [(min(0, first - lead), max(0, first - lead))]  # silence to remove (begin, end),
    spans += [((loud[i] + 1) * frame + beside, loud[i + 1] * frame - beside) for i in long]
    spans.append((min(n, last + tail), max(n, last + tail)))  # or add (begin < 0 or end > n)
    pieces, edits, at, removed = [], [], 0, 0
    for begin, end in spans:
        if end <= begin:
            continue
        pieces.append(samples[at : max(0, begin)])
        if begin < 0 or end > n:
            added = end - begin
            pieces.append(noise.normal(0, quietest, added).astype(np.float32))
            edits.append(((max(0, begin) - removed) / sample_rate, -added / sample_rate))
            removed -= added
            at = max(0, begin)
        else:
            edits.append(((begin - removed) / sample_rate, (end - begin) / sample_rate))
            removed += end - begin
            at = end
    pieces.append(samples[at:])
    out = np.concatenate(pieces)
    if own < NOISE[0]:
        out += noise.normal(0, np.sqrt(NOISE[0] ** 2 - own**2), out.shape).astype(np.float32)
    return out, np.array(edits, dtype=float).reshape(-1, 2)


def _frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    """The rms of each whole frame of `frame` samples."""
    count = len(samples) // frame
    return np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))


def _without_dc(samples: np.ndarray, frame: int) -> np.ndarray:
    """The recording less its mean when that is a DC offset (over DC_SHARE of the peak;
    a microphone's), taken over the frames clear of digital silence; digital silence stays
    as it is, and so do the near-silent samples of a frame half in it."""
    dead = _digital_silence(_frame_rms(samples, frame))
    if len(dead) == 0:
        return samples
    near = _with_neighbours(dead)
    at = np.minimum(np.arange(len(samples)) // frame, len(dead) - 1)  # each sample's frame
    clear = ~near[at]
    offset = float(samples[clear].mean(dtype=np.float64)) if clear.any() else 0.0
    if abs(offset) <= DC_SHARE * float(np.abs(samples).max()):
        return samples
    shift = clear | (~dead[at] & (np.abs(samples) > abs(offset) / 2))
    samples = samples.copy()
    samples[shift] -= np.float32(offset)
    return samples


def _frame_levels(samples: np.ndarray, frame: int) -> tuple[np.ndarray, ...]:
    """Per frame of `frame` samples: rms, digital silence, digital silence or beside it
    (half in it), sound (the rest is silence; see QUIET_DB and the constants after it)."""
    rms = _frame_rms(samples, frame)
    dead = _digital_silence(rms)
    near_dead = _with_neighbours(dead)
    heard = rms[~near_dead] if not near_dead.all() else rms[~dead]
    top, floor = float(heard.max()), float(np.percentile(heard, 10))
    threshold = max(top * 10 ** (-QUIET_DB / 20), floor * 10 ** (FLOOR_DB / 20))
    is_loud = rms >= min(threshold, top * 10 ** (-LOUD_DB / 20))
    is_loud &= rms > float(heard.min()) * 10 ** (NEAR_DB / 20)
    return rms, dead, near_dead, is_loud


def _with_neighbours(frames: np.ndarray) -> np.ndarray:
    """The frames marked, and the frame on either side of each (half in it)."""
    return np.convolve(frames, np.ones(3), mode="same") > 0


def _sound_runs(is_loud: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first frames, frames after the last) of each run of sound frames."""
    steps = np.diff(np.concatenate([[0], is_loud.astype(np.int8), [0]]))
    return np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)


def _without_clicks(samples: np.ndarray, frame: int, per_second: int) -> np.ndarray:
    """The recording with each click before the first word or after the last (sound of at
    most CLICK seconds, CLICK_GAP or more from the next sound) made digital silence, with
    a frame either side; the sound nearest the middle always stays."""
    *_, is_loud = _frame_levels(samples, frame)
    runs = list(zip(*_sound_runs(is_loud), strict=True))
    short, gap = round(CLICK * per_second), round(CLICK_GAP * per_second)
    clicks = []
    while len(runs) > 1 and runs[0][1] - runs[0][0] <= short and runs[1][0] - runs[0][1] >= gap:
        clicks.append(runs.pop(0))
    while len(runs) > 1 and runs[-1][1] - runs[-1][0] <= short and runs[-1][0] - runs[-2][1] >= gap:
        clicks.append(runs.pop())
    if not clicks:
        return samples
    samples = samples.copy()
    for begin, end in clicks:
        stop = len(samples) if end + 1 >= len(is_loud) else (end + 1) * frame
        samples[max(0, begin - 1) * frame : stop] = 0.0
    return samples


def _digital_silence(rms: np.ndarray) -> np.ndarray:
    """Which 10 ms frames (their rms) are digital silence: DEAD_DB under the level of the
    quietest tenth of the frames that are not exactly silent; none when every frame is."""
    live = rms[rms > 0]
    if len(live) == 0:
        return np.zeros(len(rms), dtype=bool)
    return rms < float(np.percentile(live, 10)) * 10 ** (-DEAD_DB / 20)


def _parts(samples: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """Sample spans to transcribe one at a time: the whole recording, or, when it holds
    more stretches of sound (WORD_GAP or more apart) than training's utterances have words
    (a phone number), parts of at most MAX_WORDS cut in the middle of the longest pauses."""
    frame = max(1, sample_rate // 100)
    if len(samples) < frame:
        return [(0, len(samples))]
    *_, is_loud = _frame_levels(samples, frame)
    begins, ends = _sound_runs(is_loud)
    apart = np.flatnonzero(begins[1:] - ends[:-1] >= WORD_GAP * sample_rate / frame) + 1
    words = np.split(np.arange(len(begins)), apart)  # runs of sound closer than WORD_GAP
    if len(words) <= MAX_WORDS:
        return [(0, len(samples))]
    gaps = [(begins[words[i][0]] - ends[words[i - 1][-1]], i) for i in range(1, len(words))]

    def split(low: int, high: int) -> list[int]:  # where words[low:high] is cut
        if high - low <= MAX_WORDS:
            return []
        middle = (low + high) / 2  # of equal pauses, the one nearest the middle
        _, _, at = max((g, -abs(i - middle), i) for g, i in gaps if low < i < high)
        return [*split(low, at), at, *split(at, high)]

    cuts = [
        (ends[words[i - 1][-1]] + begins[words[i][0]]) * frame // 2 for i in split(0, len(words))
    ]
    return list(zip([0, *cuts], [*cuts, len(samples)], strict=True))


def _on_recording_clock(times, edits: np.ndarray) -> list[float]:
    """Times on the clock of the recording _as_trained made, moved back by the silence it
    removed (or added) before each."""
    removed = np.concatenate([[0.0], np.cumsum(edits[:, 1])])
    return [t + float(removed[np.searchsorted(edits[:, 0], t, side="right")]) for t in times]


def _language_id(config, language: str) -> tuple[int, str]:
    code = language.strip().lower().removeprefix("<|").removesuffix("|>")
    token = f"<|{code}|>"
    if token not in config.lang_to_id:
        known = ", ".join(sorted(t.strip("<|>") for t in config.lang_to_id))
        raise ValueError(f"language {language!r} is not one of this model's: {known}")
    return config.lang_to_id[token], code


@torch.no_grad()
def _detect_language(model, memory) -> tuple[int, str]:
    """The language token the decoder ranks first after the start token (Whisper)."""
    config = model.generation_config
    start = torch.tensor([[config.decoder_start_token_id]], device=memory.device)
    logits = model.decode(start, memory)[0, -1]  # (V,)
    ids = sorted(config.lang_to_id.values())
    best = ids[int(logits[ids].argmax())]
    code = next(t for t, i in config.lang_to_id.items() if i == best)
    return best, code.strip("<|>")


def _whisper_prompt(model, memory, language, task) -> tuple[list[int], str | None]:
    """Whisper's decoder prompt: start, language, task, no-timestamps (as transformers)."""
    config = model.generation_config
    prompt, code = [config.decoder_start_token_id], None
    multilingual = config.lang_to_id is not None and config.is_multilingual is not False
    if multilingual:
        lang_id, code = (
            _language_id(config, language) if language else _detect_language(model, memory)
        )
        if task not in (config.task_to_id or {}):
            raise ValueError(f"task {task!r}: this model knows {sorted(config.task_to_id or {})}")
        prompt += [lang_id, config.task_to_id[task]]
    else:
        if language is not None or task not in (None, "transcribe"):
            raise ValueError("this Whisper model is English-only: no language or task to set")
        for position, token in config.forced_decoder_ids or ():
            if position == len(prompt) and token is not None:
                prompt.append(token)
    no_timestamps = config.no_timestamps_token_id
    if no_timestamps is not None and prompt[-1] != no_timestamps:
        prompt.append(no_timestamps)
    return prompt, code


def _new_tokens(model, prompt_length: int, max_new_tokens: int | None) -> int:
    """How many tokens a window may generate: transformers' Whisper rule (max_length more
    than the prompt, within the decoder's positions), else generation_config's length."""
    limit = model.config.max_positions - prompt_length
    if max_new_tokens is not None:
        return max(1, min(max_new_tokens, limit))
    if model.config.front_end == "whisper":
        total = min(model.generation_config.max_length + prompt_length, model.config.max_positions)
        return max(1, total - prompt_length)
    return max(1, min(model.generation_config.total_length(prompt_length) - prompt_length, limit))


@torch.no_grad()
def _window(model, samples, spec, *, num_beams, max_new_tokens, language, task, timed):
    """Transcribe one window: (tokens, token starts, token ends, language code)."""
    device = next(model.parameters()).device
    features = torch.from_numpy(log_mel(samples, spec))[None].to(device)  # (1, frames, F)
    members = getattr(model, "members", (model,))  # an Ensemble's, or the model
    whisper = model.config.front_end == "whisper"
    memories = [member.encode(features) for member in members] if timed or whisper else []
    generation = model.generation_config
    if whisper:
        prompt, code = _whisper_prompt(members[0], memories[0], language, task)
    else:
        prompt, code = [generation.decoder_start_token_id], None
    start = torch.tensor([prompt], device=device)
    steps = _new_tokens(model, len(prompt), max_new_tokens)
    out = model.generate(
        features, decoder_input_ids=start, num_beams=num_beams, max_new_tokens=steps
    )[0].tolist()
    generated = out[len(prompt) :]
    eos = set(generation.eos_token_id or ())
    ended = next((i for i, t in enumerate(generated) if t in eos), None)
    tokens = generated if ended is None else generated[:ended]
    if not timed or not tokens:
        return tokens, [], [], code
    times = _token_times(model, memories, prompt, tokens, ended is not None, spec, len(samples))
    return tokens, times.starts, times.ends, code


def _token_times(model, memories, prompt, tokens, ended, spec, samples):
    """TokenTimes of `tokens` from the alignment heads (teacher-forced over the output) of
    the model, or of every member of an ensemble together (the first one's settings)."""
    members = getattr(model, "members", (model,))
    generation = model.generation_config
    eos = (generation.eos_token_id or (None,))[0]
    sequence = [*prompt, *tokens, *([eos] if ended else [])]
    inputs = torch.tensor([sequence[:-1]], device=memories[0].device)
    weights = []
    for i, (member, memory) in enumerate(zip(members, memories, strict=True)):
        heads = member.generation_config.alignment_heads
        if heads is None:
            raise ValueError("word timestamps need the model's alignment_heads (generation_config)")
        ids = model.member_ids(i, inputs) if member is not model else inputs  # its own ids
        _, layers = member.decode(ids, memory, return_weights=True)
        weights += [layers[layer][0, head] for layer, head in heads]
    weights = torch.stack(weights).cpu()  # (h, T, S)
    per_position = FRAMES_PER_POSITION[model.config.front_end]
    positions = max(
        1, -(-min(samples, spec.pad_samples or samples) // spec.hop_length) // per_position
    )
    if model.config.front_end == "whisper":  # rows where the tokens are the input
        rows = weights[:, len(prompt) :, :positions]
    elif generation.pause_log_weight is None:  # rows that predict the tokens and the end
        rows = weights[:, len(prompt) - 1 :, :positions]
    else:  # the tokens' rows: pause rows take the silence after them
        rows = weights[:, len(prompt) - 1 : len(prompt) - 1 + len(tokens), :positions]
    seconds = per_position * spec.frame_seconds
    times = token_times(rows, seconds, generation.median_filter_width, generation.pause_log_weight)
    starts, ends = times.starts, times.ends
    if len(starts) < len(tokens):  # no row has the last token as input: as transformers
        starts, ends = starts + starts[-1:], ends + ends[-1:]
    return type(times)(starts[: len(tokens)], ends[: len(tokens)])


def _words(model, tokens, starts, ends) -> list[tuple[str, float, float]]:
    tokenizer = model.tokenizer
    if model.config.front_end == "audio":  # a word tokenizer: each token is a word
        return [(tokenizer.decode([t]), s, e) for t, s, e in zip(tokens, starts, ends, strict=True)]
    special = getattr(tokenizer, "special_ids", set())
    words = group_words(
        tokens, lambda ids: tokenizer.decode(ids, skip_special_tokens=False), special.__contains__
    )
    return [(text, starts[idx[0]], ends[idx[-1]]) for text, idx in words]


def transcribe(
    model,
    audio,
    sampling_rate: int,
    *,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    word_timestamps: bool = False,
) -> Transcription:
    """Transcribe mono audio (N,) at sampling_rate with a speech model (see the module
    docstring); ValueError for bad audio or a model that does not read speech."""
    spec = feature_spec(model)
    samples = resample(_as_samples(audio), int(sampling_rate), spec.sample_rate)
    duration = len(samples) / spec.sample_rate
    edits, parts = np.zeros((0, 2)), [(0, len(samples))]
    if model.config.front_end == "audio":
        samples, edits = _as_trained(samples, spec.sample_rate)
        parts = _parts(samples, spec.sample_rate)
    window = spec.pad_samples or model.config.max_positions * 4 * spec.hop_length
    model.eval()
    tokens, starts, ends, language_code = [], [], [], None
    for first, last in parts:
        for begin in range(first, last, window):
            piece, offset = samples[begin : min(begin + window, last)], begin / spec.sample_rate
            found, heard_from, heard_to, code = _window(
                model,
                piece,
                spec,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                language=language or language_code,
                task=task,
                timed=word_timestamps,
            )
            language_code = language_code or code
            tokens += found
            starts += [offset + t for t in heard_from]
            ends += [offset + t for t in heard_to]
    starts, ends = (
        [min(duration, max(0.0, t)) for t in _on_recording_clock(ts, edits)]
        for ts in (starts, ends)
    )
    decode = model.tokenizer.decode if model.tokenizer is not None else None
    text = decode(tokens) if decode is not None else None
    if not word_timestamps:
        return Transcription(text, tokens, language=language_code)
    words = _words(model, tokens, starts, ends) if decode is not None else None
    return Transcription(text, tokens, starts, words, language_code)
