"""The task registry: a config's ``task:`` name -> its :class:`~densevit.engine.task.Task` class.

The head packages register their tasks here (``@TASKS.register("detection")``); the registry
finds them through the ``densevit.heads`` entry points. It lives on the ground floor so that
reading a config (which needs the task's ``data`` and ``loss`` schemas) never imports the engine.
"""
from __future__ import annotations

from densevit.registry import HEAD_PLUGINS, Registry

TASKS = Registry("task", plugin_group=HEAD_PLUGINS)
