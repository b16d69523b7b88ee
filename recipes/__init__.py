"""Training recipes for the encoder (MLM pretraining, context extension, contrastive, distillation)."""
