"""Fine-tuning with transformers' Trainer: the dense teacher (`finetune`) and the compressed
student with distillation (`compress_with_training`)."""
