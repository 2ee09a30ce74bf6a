"""sbx's union filesystem on pyfuse3 (issue 4): a library and a command of its own.

It must import nothing from `sandbox`; the storage drivers import it, never the
other way round.
"""
