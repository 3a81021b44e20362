"""The library below the scripts: the dataset's facts, the token shard format, checkpoints,
generation, the speed machinery of the training loop, evaluation helpers. Its functions raise
(errors.UserError for bad input); only the scripts at the top print and exit."""
