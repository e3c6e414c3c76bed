"""The peers' apps, each the minimal equivalent of ``bench/apps/replkit_app.py`` in one
library, run from the peers' environment (``bench/.venv-peers``)."""
