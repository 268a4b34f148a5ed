"""Fleet: entries travel from CI to serving replicas through infrastructure teams
already run. `push` sends verified local entries to a remote, `pull` brings them back,
verified in staging before the same atomic publish a precompile uses. A remote is an OCI
registry (`oras`-style artifacts over the distribution API) or any fsspec object store;
blobs are content-addressed on both, so kernels that entries share travel once.

Modules, one line each:
  `remote`       what a remote holds (blobs, entry records, indexes) and the Remote protocol
  `connect`      open_remote: which backend a URL names
  `oci`          an OCI registry, through the distribution API
  `objectstore`  an object store (S3, GCS, a file system), through fsspec
  `http`         the one HTTP policy: redirects, credentials per hop, deadlines, body caps
  `push`         local entries to a remote, each blob once, never overwriting
  `pull`         remote entries into the cache dir, verified before they appear
  `staging`      a pull's staging dir, never written through a link
  `unit_reuse`   one unit's artifact fetched alone from a remote entry (precompile --remote)
  `explain`      would a load hit here or on the remote; else the nearest entry, factor by factor
  `transfer`     what a push or pull did to one entry, for the CLI
  `explain`      would a host hit, from records and manifests alone; else the nearest entry
"""
