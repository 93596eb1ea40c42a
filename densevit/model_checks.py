"""Checking ``model:`` of a config against the model registry, before anything is built.

:func:`check_registered_model` is what a task's ``check_config`` calls: the name must be
registered, ``num_classes`` in the task's range, and every key of ``model.kwargs`` an argument
the model takes (:func:`accepted_kwargs`), with close names suggested as the registry does.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import functools
import inspect
import textwrap
from typing import Any, Callable

from densevit.errors import ConfigError, UserInputError
from densevit.hub_weights import is_hub_name, parse_hub_name
from densevit.models import MODELS
from densevit.registry import UnknownNameError


def check_registered_model(model: Any, low: int, what: str) -> None:
    """``model`` (a ``ModelConfig``): a registered name, ``num_classes >= low`` (``what`` says the
    allowed values), known keyword arguments of plain types; else ``ConfigError("model....")``."""
    if model.num_classes < low:
        raise ConfigError(f"model.num_classes: expected {what}, got {model.num_classes}")
    _check_weights_names(model)
    if not model.name:
        raise ConfigError("model.name: required, a registered model (densevit list models)")
    try:
        MODELS.get(model.name)
    except UnknownNameError as err:
        raise ConfigError(f"model.name: {err}") from None
    accepted = accepted_kwargs(model.name)
    if accepted is None:  # the factory takes keyword arguments that cannot be followed: no check
        return
    for key, value in model.kwargs.items():
        path = f"model.kwargs.{key}"
        if key == "num_classes":
            raise ConfigError(f"{path}: set model.num_classes instead")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{path}: unknown argument of model {model.name!r}{hint} "
                              f"(known: {', '.join(sorted(accepted)) or 'none'})")
        _check_kwarg_type(accepted[key], value, path)


def _check_weights_names(model: Any) -> None:
    """Weights given by name (``timm:...``, ``hf-hub:...``) in ``model.pretrained`` or a
    ``model.kwargs.*pretrained*`` value are well formed (no network; timm names must exist)."""
    fields = [("model.pretrained", model.pretrained)]
    fields += [(f"model.kwargs.{key}", value) for key, value in model.kwargs.items() if "pretrained" in str(key)]
    for path, value in fields:
        if isinstance(value, str) and is_hub_name(value):
            try:
                parse_hub_name(value)
            except UserInputError as err:
                raise ConfigError(f"{path}: {err}") from None


def _check_kwarg_type(param: inspect.Parameter | None, value: Any, path: str) -> None:
    """A value that a plain ``int`` / ``float`` / ``bool`` parameter cannot take (None passes)."""
    if param is None or value is None:
        return
    annotation = param.annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    tp = {"int": int, "float": float, "bool": bool}.get(name or "")
    if tp is None:
        return
    ok = isinstance(value, bool) if tp is bool else (
        not isinstance(value, bool) and isinstance(value, int if tp is int else (int, float)))
    if not ok:
        raise ConfigError(f"{path}: expected {name}, got {type(value).__name__} {value!r}")


_MAX_DEPTH = 8


@functools.lru_cache(maxsize=None)
def accepted_kwargs(name: str) -> dict[str, inspect.Parameter | None] | None:
    """The keyword arguments that ``create_model(name, num_classes=..., **kwargs)`` accepts in
    ``kwargs``, each with its parameter (None when the name is only read by ``kwargs.pop``); None
    when they cannot be worked out, in which case any name may be right.

    The factory's signature gives its own arguments. When it takes ``**kwargs`` and passes them
    on (``DETR(body, num_classes, **kwargs)``, also through a dict that ``.update(kwargs)``), its
    source is read and the callee's signature followed in turn, less the arguments the call fills
    itself; names that the factory takes out (``kwargs.pop("encoder")``) count as accepted. Any
    other use of ``**kwargs``, a callee that cannot be found, or a source that cannot be read
    gives None.
    """
    return _accepted(MODELS.get(name), 0, frozenset({"num_classes"}), 0)


def _accepted(func: Callable[..., Any], n_positional: int, given: frozenset[str],
              depth: int) -> dict[str, inspect.Parameter | None] | None:
    """The keyword names ``func`` accepts beyond its first ``n_positional`` arguments and ``given``."""
    if depth > _MAX_DEPTH:
        return None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    accepted: dict[str, inspect.Parameter | None] = {}
    var_keyword = None
    positional = 0
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            var_keyword = param.name
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and positional < n_positional:
            positional += 1
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name not in given:
            accepted[param.name] = param
    if var_keyword is None:
        return accepted
    code = func.__init__ if inspect.isclass(func) else func
    uses = _kwargs_uses(code, var_keyword)
    if uses is None:
        return None
    forwards, taken = uses
    if not forwards and not taken:  # **kwargs never read: any name is taken (and ignored)
        return None
    for name in taken:
        accepted.setdefault(name, None)
    for callee, n_pos, callee_given in forwards:
        more = _accepted(callee, n_pos, callee_given, depth + 1)
        if more is None:
            return None
        for name, param in more.items():
            if name not in signature.parameters:
                accepted.setdefault(name, param)
    return accepted


def _kwargs_uses(func: Any, kw: str) -> tuple[list[tuple[Any, int, frozenset[str]]], set[str]] | None:
    """How ``func`` uses its ``**kw``: the calls it passes them to (callee, positional arguments,
    keyword names the call fills) and the names it takes out; None for any other use."""
    func = inspect.unwrap(func)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return None
    code_name = getattr(getattr(func, "__code__", None), "co_name", None)  # __name__ may be renamed
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == code_name), None)
    if node is None:
        return None
    for parent in ast.walk(node):
        for child in ast.iter_child_nodes(parent):
            child._parent = parent  # type: ignore[attr-defined]
    try:
        closure = inspect.getclosurevars(func)
    except (TypeError, ValueError):
        return None
    namespace = {**vars(builtins), **closure.builtins, **func.__globals__, **closure.nonlocals}

    # dicts that carry the keyword arguments on: ``settings.update(kw)``, ``opts = {**kw}``, ``dict(kw)``
    aliases = {kw}
    changed = True
    while changed:
        changed = False
        for sub in ast.walk(node):
            target = None
            if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "update"
                    and isinstance(sub.func.value, ast.Name) and len(sub.args) == 1
                    and isinstance(sub.args[0], ast.Name) and sub.args[0].id in aliases):
                target = sub.func.value.id
            elif (isinstance(sub, ast.Assign) and len(sub.targets) == 1 and isinstance(sub.targets[0], ast.Name)
                  and _copies(sub.value, aliases)):
                target = sub.targets[0].id
            if target is not None and target not in aliases:
                aliases.add(target)
                changed = True

    forwards: list[tuple[Any, int, frozenset[str]]] = []
    taken: set[str] = set()
    for sub in ast.walk(node):
        if not (isinstance(sub, ast.Name) and sub.id in aliases and isinstance(sub.ctx, ast.Load)):
            continue
        parent = getattr(sub, "_parent", None)
        grand = getattr(parent, "_parent", None)
        if isinstance(parent, ast.keyword) and parent.arg is None and isinstance(grand, ast.Call):
            if _copies(grand, aliases) and _assigned_to_alias(grand, aliases):
                continue  # ``opts = dict(**kw)``: followed through ``opts``
            callee = _resolve(grand.func, namespace)
            if callee is None or any(isinstance(a, ast.Starred) for a in grand.args):
                return None
            filled = frozenset(k.arg for k in grand.keywords if k.arg)
            forwards.append((callee, len(grand.args), filled))
        elif isinstance(parent, ast.Attribute) and parent.value is sub and isinstance(grand, ast.Call) \
                and grand.func is parent:
            if parent.attr == "update":
                continue  # more keys into an alias (defaults), or the alias made above
            if parent.attr not in ("pop", "get", "setdefault") or not grand.args:
                return None
            names = _key_names(grand.args[0], namespace)
            if names is None:
                return None
            taken |= names
        elif isinstance(parent, ast.Call) and parent.func is not sub and sub in parent.args \
                and isinstance(parent.func, ast.Attribute) and parent.func.attr == "update":
            continue  # ``settings.update(kw)``: the alias made above
        elif isinstance(parent, ast.Compare) and sub in parent.comparators \
                and all(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops):
            continue  # ``key in kw``
        elif isinstance(parent, ast.Dict) and _assigned_to_alias(parent, aliases):
            continue  # ``opts = {**kw}``
        elif isinstance(parent, ast.Call) and _copies(parent, aliases) and _assigned_to_alias(parent, aliases):
            continue  # ``opts = dict(kw)``
        else:
            return None
    return forwards, taken


def _copies(value: ast.AST, aliases: set[str]) -> bool:
    """``{..., **alias}``, ``dict(alias)`` or ``dict(**alias)``."""
    if isinstance(value, ast.Dict):
        return any(k is None and isinstance(v, ast.Name) and v.id in aliases for k, v in zip(value.keys, value.values))
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
        return any(isinstance(a, ast.Name) and a.id in aliases for a in value.args) or any(
            k.arg is None and isinstance(k.value, ast.Name) and k.value.id in aliases for k in value.keywords)
    return False


def _assigned_to_alias(value: ast.AST, aliases: set[str]) -> bool:
    parent = getattr(value, "_parent", None)
    return (isinstance(parent, ast.Assign) and parent.value is value and len(parent.targets) == 1
            and isinstance(parent.targets[0], ast.Name) and parent.targets[0].id in aliases)


def _resolve(expr: ast.AST, namespace: dict[str, Any]) -> Any:
    """The object a call's ``func`` names (``name`` or ``module.attr``), or None."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _resolve(expr.value, namespace)
        return getattr(owner, expr.attr, None) if owner is not None else None
    return None


def _key_names(expr: ast.AST, namespace: dict[str, Any]) -> set[str] | None:
    """The key of ``kw.pop(key)``: a string, or the loop variable of a comprehension / loop over
    a module constant of strings (``for key in _ENCODER_SIZES``)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if not isinstance(expr, ast.Name):
        return None
    node = expr
    while node is not None:
        node = getattr(node, "_parent", None)
        generators = node.generators if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp,
                                                           ast.GeneratorExp)) else []
        loops = [(g.target, g.iter) for g in generators]
        if isinstance(node, ast.For):
            loops.append((node.target, node.iter))
        for target, iterable in loops:
            if isinstance(target, ast.Name) and target.id == expr.id:
                values = _resolve(iterable, namespace) if isinstance(iterable, (ast.Name, ast.Attribute)) else None
                if isinstance(values, (tuple, list, set, frozenset)) and all(isinstance(v, str) for v in values):
                    return set(values)
                return None
    return None
