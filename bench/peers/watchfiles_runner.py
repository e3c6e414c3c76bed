"""watchfiles' ``run_process`` serving ``web_app.py`` of the working directory with
``web.run_app``, restarted on every change, with run_process's defaults:
``python bench/peers/watchfiles_runner.py PORT``."""

import os
import sys

from watchfiles import run_process


def serve(directory: str, port: int) -> None:
    """The process run_process restarts: the app, served on ``port``."""
    sys.path.insert(0, directory)
    import web_app
    from aiohttp import web

    web.run_app(web_app.create_app(), host="127.0.0.1", port=port)


if __name__ == "__main__":
    run_process(".", target=serve, args=(os.getcwd(), int(sys.argv[1])))
