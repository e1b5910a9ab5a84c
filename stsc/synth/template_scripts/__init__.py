"""Starter scripts of template tasks. Each file is copied into a task's workspace with its ``SPEC``
line replaced by the task's parameters; the files here are valid, importable Python (nothing runs on
import)."""
