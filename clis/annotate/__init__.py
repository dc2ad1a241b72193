"""``clis annotate``: a static labelling site for candidates and their layouts, and its labels.

- :mod:`clis.annotate.site` builds the site (``clis annotate build``);
- :mod:`clis.annotate.labels` reads, checks, merges and writes the ``clis.labels/1`` files
  that the site exports (``clis annotate merge``; ``clis bench agreement`` / ``calibrate``).

See docs/annotate.md.
"""
