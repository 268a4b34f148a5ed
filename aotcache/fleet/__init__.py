"""Fleet: entries travel from CI to serving replicas through infrastructure teams
already run. `push` sends verified local entries to a remote, `pull` brings them back,
verified in staging before the same atomic publish a precompile uses. A remote is an OCI
registry (`oras`-style artifacts over the distribution API) or any fsspec object store;
blobs are content-addressed on both, so kernels that entries share travel once.
"""
