"""The cache directory: entries on disk and everything that reads or changes them.

Owns the root's layout (`root`), crash-safe writes (`atomic`), the manifest format
(`manifest`), signatures (`signing`), the one pipeline of checks an entry must pass
(`checks`), scanning and reports for the CLI (`scan`, `report`), removal (`clear`)
and the fault-injection points (`failpoints`). Depends on `key`; runs nothing from an
entry.
"""
