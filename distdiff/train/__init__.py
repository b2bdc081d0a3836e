"""The training loop written once against a small context interface, its engines (DeepSpeed lives
here only), EMA, checkpoints, metrics and storage."""
