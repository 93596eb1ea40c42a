"""The task-agnostic training engine: loop, optimisation, checkpoints, distribution, logs.

* :mod:`~densevit.engine.task`: what a task supplies (model, criterion, data, evaluator).
* :mod:`~densevit.engine.trainer`: ``train(cfg, out_dir, resume, device)`` and ``evaluate``.
* :mod:`~densevit.engine.checkpoint`: atomic ``save_checkpoint`` / data-only ``load_checkpoint``.
* :mod:`~densevit.engine.build`: configs and checkpoints to tasks and models.
* :mod:`~densevit.engine.optim`: parameter groups, AdamW/SGD, warm-up + step/poly/cosine.
* :mod:`~densevit.distributed`, :mod:`~densevit.engine.sampler`: torchrun, DDP, shards.
* :mod:`~densevit.engine.runtime`: device, precision, seeds, determinism.
* :mod:`~densevit.engine.logs`: metrics.jsonl, TensorBoard, curves.png.
"""
