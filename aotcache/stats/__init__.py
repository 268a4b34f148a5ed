"""From serving back to CI: what replicas served and why they missed.

* `records`: the per-process stats file (`aotcache.stats/1`), read as untrusted data;
* `recorder`: the serving side: counts calls per size, loads and misses, flushes
  atomically (opt-in: `load(stats_dir=...)` or AOTCACHE_STATS_DIR);
* `summary`: sums records (local and remote) into hit rates, misses by factor, the
  size histogram, the hot sizes a range serves, load-time percentiles;
* `sources`: where records are read from: a stats dir, a remote;
* `remote`: stats files to and from a remote (`push --stats`), as checked data.
"""
