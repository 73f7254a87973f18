"""Applications of cross-attention: translation (the default), image captioning, question
answering and speech recognition, each with generated data, a front end, metrics and a
demo. TASKS maps the command line's --task names to the task classes (translation has
its own module functions: see tasks.translation)."""

from .captioning import CaptionTask
from .qa import QATask
from .speech import SpeechTask

TASKS = {"caption": CaptionTask, "qa": QATask, "speech": SpeechTask}

__all__ = ["TASKS", "CaptionTask", "QATask", "SpeechTask"]
