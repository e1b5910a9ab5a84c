"""The curate room: trajectory filters and the SFT set builder (paper step 7).

- ``select``: run discovery, the held-out guard and the nested ``task_fraction`` subset;
- ``convert``: one run folder -> the messages of one example (views, system prompt, thinking);
- ``tokens``: token lengths with the student's tokenizer, truncation at turn boundaries;
- ``build``: per-run conversion in a process pool, deduplication;
- ``stage``: ``run_curate``, the stage function, and its outputs.

Importing this package is cheap: the tokenizer (transformers) loads only when the stage runs.
"""

from stsc.curate.stage import run_curate

__all__ = ["run_curate"]
