"""Pieces the benchmark scripts in scripts/ share (not part of bulk).

- ``site``: the deterministic bench site (light and heavy variants) written to a directory.
- ``server``: a separate process serving directories (or a generated tiny site) as
  hosts on loopback addresses, counting requests, connections and bytes per host.
- ``sampler``: running a measured process; CPU by kind of process, memory peaks.
- ``raw``: the reference capture loops (CDP ``Page.captureScreenshot`` and
  ``page.screenshot()``) in plain async Playwright.
- ``images``: pixel-identity checks of two sets of images.
- ``common``: the venv, load average, bulk's Chromium and switches.
- ``make_fonts``: (run by hand) makes fixtures/bench/fonts from DejaVu.

A script in scripts/ imports them after ``sys.path.insert(0, <scripts dir>)``.
"""
