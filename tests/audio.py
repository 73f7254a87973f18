"""Audio files in the formats people bring (a phone's M4A, MP3, Opus, AMR, FLAC), written
with PyAV's encoders."""

import av
import numpy as np


def encode(path, samples, rate: int, codec: str, channels: int = 1) -> None:
    """Write float samples (one channel, copied to each of `channels`) with an FFmpeg
    encoder; the container is the one the file name's extension names."""
    layout = "stereo" if channels == 2 else "mono"
    data = np.tile(np.asarray(samples, np.float32)[None], (channels, 1))
    frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
    frame.sample_rate = rate
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
