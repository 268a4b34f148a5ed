"""The aotcache command line (typer): it parses arguments, calls the library and renders
what comes back (rich for people, --json for machines); no logic of its own.

Modules, one line each:
  `app`         the commands: precompile, inspect-cache, verify, clear (and push, pull from fleet)
  `fleet`       push and pull
  `stats`       stats: what the replicas recorded, summed
  `explain`     explain: would this host hit, before any download
  `options`     the options commands share, and how they become a ModelSpec and a config
  `common`      output streams, logging, exit codes and one-line errors
  `render`      rich rendering of every command's result
  `helpformat`  plain, click-style help that reads the same in a terminal and a CI log
"""
