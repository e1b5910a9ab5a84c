"""Students and supervised fine-tuning (paper step 8).

``students`` turns a student config into a local Hugging Face folder and loads it; ``sft`` is the
stage function ``run_sft``; ``trainer`` is the training process itself (trl ``SFTTrainer``);
``launch`` and ``entry`` run it under ``accelerate launch`` for multi-GPU training.
"""
