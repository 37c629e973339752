"""Edge and offline operation: prefetch, bundles for air-gapped sites, and cache lifecycle (verify, gc).

The CLI (``shoal.edge_cli``) and the admin endpoints (``mirror.server.admin``) are thin shells over these
modules. ``images``, ``bundle`` and ``zstdframes`` are pure; the rest work on a cache directory or talk HTTP.
"""
