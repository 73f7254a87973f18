"""What cross-attention aligns, in one place: teacher-forced attention maps, head means,
hard alignments, hit rates against gold, the alignment heads, the word-alignment measures,
and word timestamps read from the alignment heads by dynamic time warping (Whisper's
recipe).

Conventions:
- A map of one example is (L, H, T, S): every decoder layer and head; row t is where the
  decoder looked while predicting target token t (prompt tokens left out, the end token's
  row last), column s a memory position (the encoder output the decoder reads).
- Gold for one example lists, for each target token, the memory positions that produced
  it (a translated word's source words, a digit's patches, a spoken word's frames); an
  empty list (or a None gold) means "no gold for this token" and is not counted.
- Heads are (layer, head) pairs counting from 0, as Whisper's `alignment_heads` in
  generation_config.json; only `head_names` counts from 1, for people.
- Word-alignment links are (source, target) index pairs, written `i-j` in the Pharaoh
  format that fast_align and awesome-align print.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AlignmentScores",
    "HitRates",
    "TokenTimes",
    "alignment_error_rate",
    "alignment_heads",
    "attention_maps",
    "choose_alignment_heads",
    "choose_and_keep_alignment_heads",
    "choose_timing",
    "describe_alignment_heads",
    "dynamic_time_warping",
    "group_words",
    "hard_alignment",
    "head_hit_rates",
    "head_mean",
    "head_names",
    "heads_hit_rate",
    "hit_rate",
    "how_chosen",
    "keep_alignment_heads",
    "median_filter",
    "pause_alignment",
    "pharaoh",
    "read_pharaoh",
    "timing_scores",
    "token_times",
    "which_heads",
]

Gold = Sequence[Sequence[int]] | None
Link = tuple[int, int]

# ---- maps ---------------------------------------------------------------------------------


@torch.no_grad()
def attention_maps(
    model, task, examples: Sequence, texts: Sequence[str | None] | None = None, *, batch_size=64
) -> list[Tensor]:
    """Teacher-forced cross-attention of each example over `texts` (default: the task's
    references), in batches: one (L, H, T, S') tensor per example, the rows that predict
    its target tokens and the end token, over the positions of its own memory."""
    model.eval()
    texts = [None] * len(examples) if texts is None else list(texts)
    if len(texts) != len(examples):
        raise ValueError(f"{len(texts)} texts for {len(examples)} examples")
    from .training.batching import pad_sources
    from .utils import pad_batch

    pad, maps = task.tokenizer.pad_token_id, []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        targets = [task.target_ids(e, t) for e, t in zip(chunk, texts[start:], strict=False)]
        src, mask = pad_sources([task.source(e) for e in chunk], pad)
        memory, memory_mask = model.encode(src, mask, return_mask=True)
        tgt, _ = pad_batch([ids[:-1] for ids, _ in targets], pad)  # causal: padding after
        _, layers = model.decode(tgt, memory, src_mask=memory_mask, return_weights=True)
        stacked = torch.stack(layers, 1)  # (B, L, H, T, S')
        for i, (ids, prompt) in enumerate(targets):
            length = memory.shape[1] if memory_mask is None else int(memory_mask[i].sum())
            maps.append(stacked[i, :, :, prompt - 1 : len(ids) - 1, :length])
    return maps


def head_mean(maps: Tensor | Sequence[Tensor], heads: Sequence[Sequence[int]] | None = None):
    """(T, S) mean attention of `heads` ((layer, head) pairs; None: every layer and head)
    from one (L, H, T, S) tensor or a list of L (H, T, S) maps."""
    maps = maps if isinstance(maps, Tensor) else torch.stack(list(maps))
    if heads is None:
        return maps.mean((0, 1))
    count, per_layer = maps.shape[:2]
    outside = [list(h) for h in heads if not (0 <= h[0] < count and 0 <= h[1] < per_layer)]
    if not heads or outside:
        raise ValueError(
            f"alignment heads {[list(h) for h in heads]}: expected (layer, head) pairs within "
            f"{count} layers x {per_layer} heads, counting from 0"
        )
    layers = torch.tensor([layer for layer, _ in heads])
    return maps[layers, torch.tensor([head for _, head in heads])].mean(0)


# ---- hard alignments and the word-alignment measures --------------------------------------


def hard_alignment(
    weights: Tensor, *, sources: int | None = None, targets: int | None = None
) -> list[Link]:
    """The (source, target) links of a (T, S) map: each target row's peak, among the first
    `sources` columns and over the first `targets` rows (default: all; leave out the end
    token's row and column to align words only)."""
    weights = torch.as_tensor(weights)
    if weights.dim() != 2:
        raise ValueError(f"weights have shape {tuple(weights.shape)}; expected (T, S)")
    rows = weights[: targets or weights.shape[0], : sources or weights.shape[1]]
    if rows.shape[1] == 0:
        return []
    return [(int(s), t) for t, s in enumerate(rows.argmax(-1).tolist())]


def pharaoh(links: Iterable[Link]) -> str:
    """Links as one line of the Pharaoh format: "0-0 2-1 1-2" (source-target, sorted)."""
    return " ".join(f"{s}-{t}" for s, t in sorted(set(links)))


def read_pharaoh(line: str, *, where: str = "alignment") -> list[Link]:
    """The links of one Pharaoh line ("0-0 2-1"; "0?1" marks a possible link, read as a
    link); ValueError naming `where` for anything else."""
    links = []
    for item in line.split():
        parts = item.replace("?", "-").split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{where}: {item!r} is not a source-target link like 3-4")
        links.append((int(parts[0]), int(parts[1])))
    return links


@dataclass(frozen=True)
class AlignmentScores:
    """Corpus-level word-alignment scores (fractions): precision against the possible links,
    recall against the sure links, and the alignment error rate (Och and Ney, 2003)."""

    precision: float
    recall: float
    aer: float


def alignment_error_rate(
    predicted: Sequence[Iterable[Link]],
    sure: Sequence[Iterable[Link]],
    possible: Sequence[Iterable[Link]] | None = None,
) -> AlignmentScores:
    """Precision |A & P| / |A|, recall |A & S| / |S| and AER 1 - (|A & S| + |A & P|) /
    (|A| + |S|) summed over sentences; A predicted, S sure, P possible links (P includes S;
    default: P = S)."""
    if len(predicted) != len(sure) or (possible is not None and len(possible) != len(sure)):
        counts = [len(predicted), len(sure)] + ([] if possible is None else [len(possible)])
        raise ValueError(f"alignments of different numbers of sentences: {counts}")
    a_total = s_total = a_and_s = a_and_p = 0
    for i, (a, s) in enumerate(zip(predicted, sure, strict=True)):
        a, s = set(a), set(s)
        p = s | (set() if possible is None else set(possible[i]))
        a_total, s_total = a_total + len(a), s_total + len(s)
        a_and_s, a_and_p = a_and_s + len(a & s), a_and_p + len(a & p)
    if a_total + s_total == 0:
        raise ValueError("no links to score: the predicted and sure alignments are empty")
    return AlignmentScores(
        precision=a_and_p / max(1, a_total),
        recall=a_and_s / max(1, s_total),
        aer=1 - (a_and_s + a_and_p) / (a_total + s_total),
    )


# ---- hit rates ----------------------------------------------------------------------------


def hit_rate(maps: Sequence[Tensor], gold: Sequence[Gold]) -> float:
    """How often a target token's attention peak lands on one of its gold positions.

    maps[i]: (T, S) attention of example i; gold[i]: for each target token the positions
    that produced it (tokens without gold, and examples whose gold is None, are skipped).
    """
    hits = total = 0
    for attention, links in zip(maps, gold, strict=True):
        if not links:
            continue
        for peak, link in zip(attention.argmax(-1).tolist(), links, strict=False):
            if link:
                total += 1
                hits += peak in link
    return hits / max(1, total)


def heads_hit_rate(
    maps: Sequence[Tensor], gold: Sequence[Gold], heads: Sequence[Sequence[int]] | None
) -> float:
    """hit_rate of the mean attention of `heads` (None: every head); maps[i] (L, H, T, S)."""
    return hit_rate([head_mean(m, heads) for m in maps], gold)


def head_hit_rates(maps: Sequence[Tensor], gold: Sequence[Gold]) -> Tensor:
    """(L, H) hit_rate of every cross-attention head on its own; maps[i] (L, H, T, S)."""
    layers, heads = maps[0].shape[:2]
    rates = [
        [hit_rate([m[layer, head] for m in maps], gold) for head in range(heads)]
        for layer in range(layers)
    ]
    return torch.tensor(rates, dtype=torch.float64)


class HitRates:
    """Hit rates of one model over subsets of the same examples, each example's maps and
    gold computed once (a demo's overall and per-kind figures overlap)."""

    def __init__(self, model, task, examples: Sequence) -> None:
        self.model, self.task, self.examples = model, task, examples
        self.seen: dict[int, tuple[Tensor, Gold]] = {}

    def maps(self, indices: Iterable[int]) -> tuple[list[Tensor], list[Gold]]:
        """Every layer's and head's maps of these examples, (L, H, T, S) each, and their gold."""
        indices = list(indices)
        new = [i for i in dict.fromkeys(indices) if i not in self.seen]
        found = attention_maps(self.model, self.task, [self.examples[i] for i in new])
        for i, m in zip(new, found, strict=True):
            self.seen[i] = m, self.task.gold(self.examples[i])
        return [self.seen[i][0] for i in indices], [self.seen[i][1] for i in indices]

    def __call__(self, indices: Iterable[int], heads=None) -> float:
        """heads_hit_rate over these examples (heads None: the mean of every head)."""
        return heads_hit_rate(*self.maps(indices), heads)


# ---- alignment heads ----------------------------------------------------------------------


def choose_alignment_heads(
    maps: Sequence[Tensor],
    gold: Sequence[Gold],
    *,
    min_gain: float = 0.005,
    trained: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """The cross-attention heads whose mean attention aligns best on these (validation)
    maps, as Whisper reads word times from a few alignment heads rather than from all:
    grown greedily from the best single head, one head at a time while a head raises the
    hit rate by at least `min_gain` (a guard against choosing on a few words' noise); all
    heads if their mean does at least as well. maps[i]: (L, H, T, S).

    trained: the (layer, head) that training pulled toward the gold alignment (supervised
    attention, TrainConfig.alignment_loss; the layer may count from the end). It is the
    choice: other heads may place their peak inside the words as often, but only the
    trained one was taught where the words begin and end, which word times read."""
    if not maps:
        raise ValueError("no attention maps to choose alignment heads on")
    layers, per_layer = maps[0].shape[:2]
    if trained is not None:
        layer, head = trained
        if not (-layers <= layer < layers and 0 <= head < per_layer):
            raise ValueError(
                f"trained alignment head {tuple(trained)}: the maps have {layers} layers x "
                f"{per_layer} heads"
            )
        return [(layer % layers, head)]
    every = [(layer, head) for layer in range(layers) for head in range(per_layer)]
    rate: dict[tuple, float] = {}

    def score(heads: list[tuple[int, int]]) -> float:
        key = tuple(sorted(heads))
        if key not in rate:
            rate[key] = heads_hit_rate(maps, gold, heads)
        return rate[key]

    chosen = [max(every, key=lambda h: score([h]))]  # the first of equals, in layer order
    while len(chosen) < len(every):
        best = max((h for h in every if h not in chosen), key=lambda h: score([*chosen, h]))
        if score([*chosen, best]) < score(chosen) + min_gain:
            break
        chosen.append(best)
    return every if score(every) >= score(chosen) else sorted(chosen)


def alignment_heads(
    valid: tuple[Sequence, Sequence],
    test: tuple[Sequence, Sequence],
    *,
    trained: Sequence[int] | None = None,
) -> dict:
    """Alignment heads chosen on the validation split (choose_alignment_heads; the trained
    head where there is one) and measured on the test split, with every head's own test
    rate; valid and test are (maps, gold), maps[i] (L, H, T, S)."""
    shapes = {tuple(m.shape[:2]) for m in (*valid[0], *test[0])}
    if len(shapes) != 1:
        raise ValueError(f"maps with different layers x heads: {sorted(shapes)}")
    heads = choose_alignment_heads(*valid, trained=trained)
    return {
        "alignment_heads": [list(h) for h in heads],
        "alignment_heads_trained": trained is not None,
        "alignment_heads_hit_rate": heads_hit_rate(*test, heads),
        "alignment_heads_valid_hit_rate": heads_hit_rate(*valid, heads),
        "alignment_hit_rate_per_head": head_hit_rates(*test).tolist(),
    }


TIMING_GRID = {
    "median_filter_width": (1, 3, 5),
    "pause_log_weight": (-2.5, -3.0, -3.5, -4.0, -4.5, -5.0),
}


def choose_timing(task, maps: Sequence[Tensor], heads, examples: Sequence) -> dict | None:
    """How to read word times from the alignment heads (median_filter_width and
    pause_log_weight of token_times), chosen on these validation maps (L, H, T, S') and
    examples: the settings of TIMING_GRID whose word boundaries land within 100 ms most
    often, then with the smallest mean error. None for tasks without timed gold or without
    pause rows in their recipe (task.timing)."""
    if "pause_log_weight" not in task.timing or not examples:
        return None
    default = dict(task.timing)
    best, best_key = None, None
    try:
        for width in TIMING_GRID["median_filter_width"]:
            for level in TIMING_GRID["pause_log_weight"]:
                task.timing = {**default, "median_filter_width": width, "pause_log_weight": level}
                spans = [task.word_spans(m, heads, e) for m, e in zip(maps, examples, strict=True)]
                if spans[0] is None:
                    return None
                scores = timing_scores([p for p, _ in spans], [g for _, g in spans])
                key = (round(scores["f1_100ms"], 6), -scores["boundary_error"])
                if best_key is None or key > best_key:
                    best, best_key = dict(task.timing), key
    finally:
        task.timing = default
    return best


def keep_alignment_heads(
    model, heads: Sequence[Sequence[int]], folder: str | Path, **timing
) -> None:
    """Record alignment heads with the model and in the generation_config.json of its saved
    folder, where `xattn attention` and word timestamps find them; `timing` sets how word
    times are read from them (median_filter_width, pause_log_weight)."""
    from .model.transformer import GENERATION_FILE

    model.set_alignment_heads(heads)
    model.generation_config = model.generation_config.replace(**timing)
    model.generation_config.save(Path(folder) / GENERATION_FILE)


def choose_and_keep_alignment_heads(
    model,
    task,
    examples: Sequence,
    folder: str | Path,
    *,
    count: int = 300,
    trained: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """choose_alignment_heads on the first `count` of these validation examples (the
    trained head where there is one), then keep_alignment_heads with the timing settings
    chosen on them (choose_timing; the task's own where it has none to choose)."""
    rates = HitRates(model, task, examples)
    first = range(min(count, len(examples)))
    maps, gold = rates.maps(first)
    heads = choose_alignment_heads(maps, gold, trained=trained)
    timing = choose_timing(task, maps, heads, [examples[i] for i in first])
    keep_alignment_heads(model, heads, folder, **(timing or task.timing))
    return heads


def head_names(heads: Sequence[Sequence[int]]) -> str:
    """'layer 1 head 1 + layer 2 head 3' for (layer, head) pairs counting from 0."""
    return " + ".join(f"layer {layer + 1} head {head + 1}" for layer, head in heads)


def which_heads(heads: Sequence[Sequence[int]] | None) -> str:
    """The heads a mean is over, in words: "the alignment heads layer 2 head 1" (None:
    "every layer and head")."""
    return "every layer and head" if heads is None else f"the alignment heads {head_names(heads)}"


def how_chosen(trained: bool) -> str:
    """How alignment heads were picked, in words (trained: the head training taught)."""
    return "trained to align" if trained else "chosen on the validation split"


def describe_alignment_heads(result: dict) -> str:
    """One line for a demo's output from an alignment_heads result."""
    chosen, per_head = result["alignment_heads"], result["alignment_hit_rate_per_head"]
    if len(chosen) == len(per_head) * len(per_head[0]):
        which = "all of them (no subset does better there)"
    else:
        which = head_names(chosen)
    return (
        f"  alignment heads {how_chosen(result['alignment_heads_trained'])}: {which}: "
        f"{result['alignment_heads_hit_rate']:.1%} of test words; every head: summary.json"
    )


# ---- word timestamps: dynamic time warping over the alignment heads ---------------------


def median_filter(x: Tensor, width: int) -> Tensor:
    """The running median of `width` (odd) values along the last dimension, edges
    reflected; unchanged when the last dimension is too short to reflect."""
    if width <= 0 or width % 2 != 1:
        raise ValueError(f"median filter width {width}; expected an odd positive int")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    flat = x.reshape(-1, 1, x.shape[-1])
    padded = F.pad(flat, (pad, pad), mode="reflect")  # (N, 1, S + 2 pad)
    windows = padded.unfold(-1, width, 1)  # (N, 1, S, width)
    return windows.sort(dim=-1).values[..., pad].reshape(x.shape)


def dynamic_time_warping(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The path through a (T, S) cost matrix from (0, 0) to (T - 1, S - 1), each step one
    row, one column or both, with the least summed cost: (rows, columns) of its cells in
    order. Costs add up in float32; a step that stays in the row wins ties, a diagonal
    step needs to be strictly cheapest (the rule Whisper's implementations use)."""
    cost = np.asarray(cost, dtype=np.float64)
    T, S = cost.shape
    total = np.full((T + 1, S + 1), np.inf, dtype=np.float32)
    trace = np.full((T + 1, S + 1), -1, dtype=np.int8)
    total[0, 0] = 0
    for d in range(2, T + S + 1):  # one anti-diagonal i + j = d at a time: its cells are
        i = np.arange(max(1, d - S), min(T, d - 1) + 1)  # independent of each other
        j = d - i
        diagonal, up, left = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where(
            (diagonal < up) & (diagonal < left), 0, np.where((up < diagonal) & (up < left), 1, 2)
        )
        best = np.choose(step, [diagonal, up, left])
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = step
    trace[0, :], trace[:, 0] = 2, 1
    i, j, rows, columns = T, S, [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        columns.append(j - 1)
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(columns[::-1])


@dataclass(frozen=True)
class TokenTimes:
    """Where each row (token) of a DTW alignment lies in time: starts[k] and ends[k] in
    seconds, the first and one past the last memory position its path cell covers."""

    starts: list[float]
    ends: list[float]


def token_times(
    weights: Tensor,
    seconds_per_position: float,
    median_filter_width: int = 7,
    pause_log_weight: float | None = None,
):
    """Time each row of weights (heads, T, S) (the alignment heads' cross-attention of T
    tokens over S memory positions) by dynamic time warping. Returns TokenTimes.

    Whisper's recipe (pause_log_weight None, as transformers' return_token_timestamps):
    each position's weights normalized across the tokens, median-filtered along time,
    averaged over the heads, aligned to the tokens. With pause_log_weight (for heads
    trained to cover each word, xattn's speech models): the log of the heads' mean weights,
    median-filtered, and pause rows of that constant log-weight before, between and after
    the token rows, so silence before, between and after words is nobody's; a token's span
    is then where its attention stands out of that level (pass the words' own rows: an end
    token's row would take the silence after the last word)."""
    if weights.dim() != 3:
        raise ValueError(f"weights have shape {tuple(weights.shape)}; expected (heads, T, S)")
    T = weights.shape[1]
    if T == 0:
        return TokenTimes([], [])
    w = weights.float()
    if pause_log_weight is None or T > w.shape[2]:  # more tokens than positions: no pauses
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        w = (w - mean) / std.clamp_min(1e-12)
        matrix = median_filter(w, median_filter_width).mean(0)  # (T, S)
        rows_of = list(range(T))
    else:
        score = median_filter(w.mean(0).clamp_min(1e-6).log()[None], median_filter_width)[0]
        spans = pause_alignment(score.double().numpy(), pause_log_weight)
        return TokenTimes(
            [a * seconds_per_position for a, _ in spans],
            [b * seconds_per_position for _, b in spans],
        )
    rows, columns = dynamic_time_warping(-matrix.double().numpy())
    starts, ends = [], []
    for row in rows_of:
        mine = columns[rows == row]
        starts.append(float(mine.min()) * seconds_per_position)
        ends.append(float(mine.max() + 1) * seconds_per_position)
    return TokenTimes(starts, ends)


def pause_alignment(score: np.ndarray, pause: float) -> list[tuple[int, int]]:
    """The best monotonic labelling of S positions with T tokens in order and optional
    pauses before, between and after them: every position is a pause or a token, each
    token takes at least one position; maximizes the summed score (score (T, S) for
    tokens, `pause` for a pause position). Returns each token's positions [start, end)."""
    T, S = score.shape
    if S < T:
        raise ValueError(f"{T} tokens cannot be placed in {S} positions")
    states = np.full((2 * T + 1, S), pause)  # pause 0, token 0, ..., token T-1, pause T
    states[1::2] = score
    best = np.full(2 * T + 1, -np.inf)
    best[:2] = states[:2, 0]  # start in the first pause or the first token
    came = np.zeros((2 * T + 1, S), dtype=np.int64)
    into_token = np.zeros(2 * T + 1, dtype=bool)
    into_token[1::2] = True  # a pause may be skipped: token k - 1 straight to token k
    for j in range(1, S):
        stay, step = best, np.concatenate([[-np.inf], best[:-1]])
        jump = np.concatenate([[-np.inf, -np.inf], best[:-2]])
        jump[~into_token] = -np.inf
        moves = np.stack([stay, step, jump])  # (3, 2T + 1): from k, k - 1, k - 2
        pick = moves.argmax(0)
        came[:, j] = np.arange(2 * T + 1) - pick
        best = moves[pick, np.arange(2 * T + 1)] + states[:, j]
    state = 2 * T if best[2 * T] > best[2 * T - 1] else 2 * T - 1  # end in a pause or not
    path = []
    for j in range(S - 1, -1, -1):
        path.append(state)
        state = came[state, j]
    path = np.array(path[::-1])
    spans = []
    for t in range(T):
        mine = np.flatnonzero(path == 2 * t + 1)
        spans.append((int(mine.min()), int(mine.max()) + 1))
    return spans


PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


def group_words(
    tokens: Sequence[int],
    decode: Callable[[list[int]], str],
    special: Callable[[int], bool] = lambda token: False,
) -> list[tuple[str, list[int]]]:
    """Tokens grouped into words as openai-whisper groups them for languages written with
    spaces: tokens join until their text decodes whole (no split UTF-8 character); a piece
    that starts with a space, is punctuation or a special token starts a new word; then
    opening punctuation joins the word after it and closing punctuation the word before.
    Returns (word text, indices into tokens) for each word."""
    pieces: list[tuple[str, list[int]]] = []
    current: list[int] = []
    for index in range(len(tokens)):
        current.append(index)
        text = decode([tokens[i] for i in current])
        if "\ufffd" not in text or index == len(tokens) - 1:
            pieces.append((text, current))
            current = []
    words: list[list] = []
    for text, indices in pieces:
        starts_word = (
            not words
            or special(tokens[indices[0]])
            or text.startswith(" ")
            or text.strip() in string.punctuation
        )
        if starts_word:
            words.append([text, list(indices)])
        else:
            words[-1][0] += text
            words[-1][1] += indices
    following = len(words) - 1
    for i in range(len(words) - 2, -1, -1):  # "(" and "¿" join the next word
        if words[i][0].startswith(" ") and words[i][0].strip() in PREPEND_PUNCTUATION:
            words[following] = [
                words[i][0] + words[following][0],
                words[i][1] + words[following][1],
            ]
            words[i] = ["", []]
        else:
            following = i
    kept = 0
    for i in range(1, len(words)):  # "." and "," join the word before
        if words[i][0] and not words[kept][0].endswith(" ") and words[i][0] in APPEND_PUNCTUATION:
            words[kept] = [words[kept][0] + words[i][0], words[kept][1] + words[i][1]]
            words[i] = ["", []]
        elif words[i][0]:
            kept = i
    return [(text, indices) for text, indices in words if text]


def timing_scores(
    predicted: Sequence[Sequence[tuple[float, float]]],
    gold: Sequence[Sequence[tuple[float, float]]],
    tolerances: Sequence[float] = (0.05, 0.1),
) -> dict[str, float]:
    """How well predicted word spans (start, end) in seconds match the gold spans of the
    same words (one list per utterance, word for word): the mean absolute start and end
    errors (seconds), the F1 of word boundaries (starts and ends) within each tolerance,
    and the mean intersection over union of the spans. Keys: start_error, end_error,
    boundary_error, f1_50ms, f1_100ms (for the default tolerances), iou."""
    starts, ends, ious = [], [], []
    for mine, truth in zip(predicted, gold, strict=True):
        if len(mine) != len(truth):
            raise ValueError(f"{len(mine)} predicted spans for {len(truth)} gold words")
        for (s, e), (gs, ge) in zip(mine, truth, strict=True):
            starts.append(abs(s - gs))
            ends.append(abs(e - ge))
            overlap = max(0.0, min(e, ge) - max(s, gs))
            ious.append(overlap / max(1e-9, max(e, ge) - min(s, gs)))
    if not starts:
        raise ValueError("no words to time")
    errors = np.array(starts + ends)  # with word-for-word spans, precision = recall
    scores = {
        "start_error": float(np.mean(starts)),
        "end_error": float(np.mean(ends)),
        "boundary_error": float(errors.mean()),
        "iou": float(np.mean(ious)),
    }
    for tolerance in tolerances:
        scores[f"f1_{round(tolerance * 1000)}ms"] = float((errors <= tolerance + 1e-9).mean())
    return scores
