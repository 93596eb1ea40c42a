"""The task-agnostic training engine: loop, optimisation, checkpoints, distribution, logs."""
