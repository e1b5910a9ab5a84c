"""Task synthesis: topics, proposals, task generators (template and model), the MLGym task folder,
self-debugging validation, the task library and its MLGym export.

Stages: ``topics`` (``stsc.synth.topics``), ``propose`` (``stsc.synth.propose``), ``generate``
(``stsc.synth.generate``), ``validate`` (``stsc.synth.validate``). The task folder contract is
``stsc.synth.task``; the library and its split are ``stsc.synth.library``; ``stsc-tasks`` is
``stsc.synth.cli``. Importing this package imports none of them.
"""
