"""replkit: Pedestal's interceptors, routes and server-sent events on aiohttp, for the REPL.

The modules follow the concepts of Pedestal's server-sent-events guide: ``interceptor``,
``routes``, ``connector``, ``sse``, the ``aiohttp`` adapter, ``lifecycle``, ``reload``,
``repl`` and ``cli``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
