"""The task-agnostic training engine: loop, optimisation, checkpoints, distribution, logs.

* :mod:`~densevit.engine.task`: what a task supplies (model, criterion, data, evaluator).
* :mod:`~densevit.engine.trainer`: the loop, ``train(cfg, out_dir, resume, device)``.
* :mod:`~densevit.engine.evaluate`: scoring a model on the validation set (in the loop and ``evaluate``).
* :mod:`~densevit.engine.state`: what a checkpoint holds to continue exactly, and restoring it.
* :mod:`~densevit.engine.ema`: the exponential moving average of the weights (``train.ema``).
* :mod:`~densevit.engine.checkpoint`: atomic ``save_checkpoint`` / data-only ``load_checkpoint``.
* :mod:`~densevit.engine.build`: configs and checkpoints to tasks and models.
* :mod:`~densevit.engine.optim`: parameter groups (as the model declares them), AdamW/SGD, schedules.
* :mod:`~densevit.engine.signals`: Ctrl-C / SIGTERM as a clean, resumable stop.
* :mod:`~densevit.distributed`, :mod:`~densevit.engine.sampler`: torchrun, DDP, shards.
* :mod:`~densevit.engine.runtime`: device, precision, seeds, determinism.
* :mod:`~densevit.engine.logs`: metrics.jsonl, curves.png, and the trackers of ``train.loggers``.
* :mod:`~densevit.engine.trackers`: TensorBoard, MLflow, W&B (``train.loggers``).
"""
