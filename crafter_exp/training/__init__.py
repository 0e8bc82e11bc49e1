"""Trainers: local SFT (tiny student, LoRA/QLoRA/full) and OpenAI-compatible fine-tuning jobs."""
