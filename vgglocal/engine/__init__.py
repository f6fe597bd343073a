"""Training: losses, the plateau schedule, the engine (train_one_epoch / evaluate / fit),
resumable checkpoints, DDP, and the config wiring for train-cls / train-loc."""
