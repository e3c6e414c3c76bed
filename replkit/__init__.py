"""replkit: Pedestal's interceptors, routes and server-sent events on aiohttp, for the REPL.

The modules follow the concepts of Pedestal's server-sent-events guide: ``interceptor``,
``routes``, ``connector``, ``sse``, the ``aiohttp`` adapter, ``lifecycle``, ``reload``,
``repl`` and ``cli``.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: object) -> None:
    """``%load_ext replkit``: see :mod:`replkit.ipython`."""
    from replkit.ipython import load_ipython_extension as load

    load(shell)  # type: ignore[arg-type]


def unload_ipython_extension(shell: object) -> None:
    """``%unload_ext replkit``: stop the servers and the watcher the extension started."""
    from replkit.ipython import unload_ipython_extension as unload

    unload(shell)  # type: ignore[arg-type]
