"""Training (needs the [train] extra): data, augmentation, the trainer, evaluation."""
