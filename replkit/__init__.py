"""replkit: Pedestal's interceptors, routes and server-sent events on aiohttp, for the REPL.

The modules follow the concepts of Pedestal's server-sent-events guide: ``interceptor``,
``routes``, ``connector`` and its default interceptors in ``http``, ``sse`` and ``topic``,
the ``aiohttp`` adapter; then what serves and reloads them: ``server``, ``application``
(plain aiohttp apps), ``lifecycle``, ``imports``, ``reload``, ``watch``, ``session``,
``workers``, ``repl``, ``cli``, ``ipython``, and ``testing``.
"""

__version__ = "0.2.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: object) -> None:
    """``%load_ext replkit``: see :mod:`replkit.ipython`."""
    from replkit.ipython import load_ipython_extension as load

    load(shell)  # type: ignore[arg-type]


def unload_ipython_extension(shell: object) -> None:
    """``%unload_ext replkit``: stop the servers and the watcher the extension started."""
    from replkit.ipython import unload_ipython_extension as unload

    unload(shell)  # type: ignore[arg-type]
