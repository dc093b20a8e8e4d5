"""snapshot_restore_py: Lambda's SnapStart hook registry for Python, under
Lambda's module name, so that code written for Lambda imports it unchanged::

    from snapshot_restore_py import register_before_snapshot, register_after_restore

    @register_before_snapshot
    def close_connections():
        ...

    register_after_restore(reconnect, "db", timeout=5)

With ``snapstart: true`` sluice runs the before-snapshot hooks once in the
template (last registered first, as Lambda does) and the after-restore hooks
in every environment forked from it (in registration order). sluice_runtime's
register_before_snapshot/register_after_restore feed the same lists.
"""

__all__ = [
    "get_after_restore",
    "get_before_snapshot",
    "register_after_restore",
    "register_before_snapshot",
]

_before_snapshot_registry = []
_after_restore_registry = []


def register_before_snapshot(func, *args, **kwargs):
    """Run func(*args, **kwargs) before the snapshot. Returns func, so it
    works as a decorator."""
    _before_snapshot_registry.append((func, args, kwargs))
    return func


def register_after_restore(func, *args, **kwargs):
    """Run func(*args, **kwargs) in each restored environment. Returns func,
    so it works as a decorator."""
    _after_restore_registry.append((func, args, kwargs))
    return func


def get_before_snapshot():
    """The registered (func, args, kwargs) tuples, in registration order."""
    return _before_snapshot_registry


def get_after_restore():
    """The registered (func, args, kwargs) tuples, in registration order."""
    return _after_restore_registry
