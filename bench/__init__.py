"""replkit's side-by-side benchmark: replkit and the servers its users run today, in one run.

``python -m bench`` (``make bench``) runs every scenario of :mod:`bench.scenarios` against
replkit and its peers, each server a process of its own on a free loopback port, driven by
the same client (:mod:`bench.client`), and writes ``bench/RESULTS.md`` and
``bench/charts/*.png``. ``--smoke`` runs every scenario and every contender at tiny sizes,
once: ``tests/test_bench.py`` does so to keep this code from rotting. How each figure is
measured: ``bench/README.md``.

This package imports nothing beyond the standard library at its top level: the peers' apps
under ``bench/peers`` run from the peers' own environment, which has no replkit.
"""
