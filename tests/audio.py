"""Audio files in the formats people bring (a phone's M4A, MP3, Opus, AMR, FLAC), written
with PyAV's encoders."""

import av
import numpy as np


def encode(path, samples, rate: int, codec: str, channels: int = 1) -> None:
    """Write float samples with an FFmpeg encoder: (N,) copied to each of `channels`, or
    (channels, N) one row a channel; the container is the one the file name's extension
    names."""
    data = np.asarray(samples, np.float32)
    data = np.tile(data[None], (channels, 1)) if data.ndim == 1 else data
    layout = "stereo" if len(data) == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
    frame.sample_rate = rate
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
