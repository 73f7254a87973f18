"""Applications of cross-attention, one Task each: translation (the default), image
captioning, question answering and speech recognition; one train driver and one demo
driver serve all four (tasks.run). TASKS maps the command line's --task names to them."""

from .base import Task
from .captioning import CaptionTask
from .qa import QATask
from .run import draw_example, run_demo, task_for_model, train_task
from .speech import SpeechTask
from .translation import TranslationTask, translate

TASKS: dict[str, type[Task]] = {
    "translate": TranslationTask,
    "caption": CaptionTask,
    "qa": QATask,
    "speech": SpeechTask,
}

__all__ = [
    "TASKS",
    "CaptionTask",
    "QATask",
    "SpeechTask",
    "Task",
    "TranslationTask",
    "draw_example",
    "run_demo",
    "task_for_model",
    "train_task",
    "translate",
]
