"""Times one CTranslate2 Translator for bench_generation.py, in a process that holds nothing
else: no PyTorch, no second Translator (either slows CTranslate2 by 3x or more on 2 cores;
docs/benchmarks.md).

    python ct2_worker.py MODEL_DIR COMPUTE_TYPE THREADS

Reads one JSON request a line on stdin, {"batch": [[token, ...], ...], "new_tokens": N,
"beams": K}, and answers each with one line: the seconds of one call, timed after a warm-up
call. Before answering it waits for its OpenMP threads to stop spinning, so that they take
no CPU from whatever runs next.
"""

from __future__ import annotations

import json
import sys
import time

import ctranslate2

SPIN_SECONDS = 0.3  # Intel OpenMP's threads spin for KMP_BLOCKTIME (200 ms) after work


def main(folder: str, compute_type: str, threads: str) -> None:
    translator = ctranslate2.Translator(
        folder, device="cpu", compute_type=compute_type, inter_threads=1, intra_threads=int(threads)
    )
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)

        def call(request=request):
            return translator.translate_batch(
                request["batch"],
                beam_size=request["beams"],
                max_decoding_length=request["new_tokens"],
                min_decoding_length=request["new_tokens"],
                max_batch_size=0,
            )

        call()
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
        time.sleep(SPIN_SECONDS)
        print(json.dumps(seconds), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
