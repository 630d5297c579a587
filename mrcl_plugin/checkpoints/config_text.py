"""A config's text read as data, never run.

An mmengine config is Python: ``Config.fromstring`` executes it. The text
saved in a checkpoint (``meta['cfg']``, and the legacy ``meta['config']``
that mmengine's ``Runner.resume`` executes) or in a work_dir came from a
file, so it is parsed here with :mod:`ast`, and only literals, lists,
tuples, ``{...}`` and ``dict(k=v, ...)`` come out.
"""
import ast
from typing import Any, Dict, Optional


def _data(node: ast.AST) -> Any:
    """A config expression as data; anything else raises ValueError."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == 'dict' and not node.args:
        return {kw.arg: _data(kw.value) for kw in node.keywords if kw.arg}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_data(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_data(k): _data(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def _assignments(text: str):
    """(name, value node) of each top-level ``name = value``, and the first
    statement that is anything else (None if none)."""
    tree = ast.parse(text)
    found, other = [], None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            found.append((node.targets[0].id, node.value))
        elif other is None:
            other = node
    return found, other


def config_data(text: str) -> Dict[str, Any]:
    """The top-level ``name = value`` of a config's text whose value is data
    (as mmengine dumps a config: ``dict(...)``, lists, literals). Other
    statements are left out; text that does not parse gives {}."""
    try:
        found, _ = _assignments(text)
    except (SyntaxError, ValueError, TypeError, RecursionError,
            MemoryError):
        return {}
    data = {}
    for name, value in found:
        try:
            data[name] = _data(value)
        except (ValueError, TypeError, SyntaxError, RecursionError,
                MemoryError):
            pass
    return data


def code_in(text: str) -> Optional[str]:
    """Where a config's text is more than data: 'line N: <statement>' of the
    first statement that is not ``name = <data>``, or None where it is all
    data (as mmengine dumps a config). Text that does not parse is code."""
    try:
        found, other = _assignments(text)
    except (SyntaxError, ValueError, TypeError, RecursionError,
            MemoryError) as e:
        return f'it does not parse ({type(e).__name__})'
    if other is not None:
        return f'line {other.lineno}: {ast.get_source_segment(text, other)}'
    for name, value in found:
        try:
            _data(value)
        except (ValueError, TypeError, SyntaxError, RecursionError,
                MemoryError):
            return f'line {value.lineno}: {name} = ' \
                f'{ast.get_source_segment(text, value)}'
    return None


def config_part(cfg: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    """``cfg[k1][k2]...`` of :func:`config_data`'s dict, {} where a level is
    missing or not a dict."""
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def gpu_ids_only(text: str) -> Optional[str]:
    """The legacy ``meta['config']`` reduced to what mmengine's resume reads
    from it, its ``gpu_ids``, as text built from the parsed numbers (so that
    executing it runs nothing of the file); None where it has none."""
    ids = config_data(text).get('gpu_ids')
    if isinstance(ids, (list, tuple)) and all(type(i) is int for i in ids):
        return f'gpu_ids = {[int(i) for i in ids]!r}'
    return None
