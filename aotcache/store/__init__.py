"""The cache directory: entries on disk and everything that reads or changes them.
Depends on `key`; runs nothing from an entry.

Modules, one line each:
  `root`          the root's layout, and how entries appear atomically
  `atomic`        crash-safe writes: written, fsynced, then renamed
  `safefs`        file operations that never follow a link nor block on a FIFO
  `manifest`      manifest.json: the Manifest, parsed once and checked
  `records`       its pieces and units, typed (its artifacts: formats.artifact)
  `schema`        what a manifest must look like, field by field
  `structure`     the building blocks of a structure check (string, integer, record, ...)
  `plain`         plain values: a traced setting as JSON that says its own type
  `traced_state`  the settings a trace read, as checks made at load
  `signing`       Ed25519 or HMAC-SHA256 signatures over the manifest
  `checks`        the one pipeline of checks an entry must pass
  `scan`          one record per entry with its status (inspect-cache, clear)
  `clear`         removing entries, leftovers and stale locks
  `failpoints`    named fault-injection points for the fault suite
"""
