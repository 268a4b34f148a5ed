"""The compile side: capture, split, Inductor compile, native export, precompile.
Imported only when something is compiled; the serving path never imports it.

Modules, one line each, in the order a precompile uses them:
  `precompile`       the orchestration: calls each step below
  `weights`          a model built without weights: placeholders, and random values for the check
  `peak_memory`      each stage's peak resident memory, for progress and --json
  `request`          BuildRequest: what one precompile is asked to do
  `remote_trust`     what a build may take from a remote (signed by whom, or nothing)
  `unchanged`        the no-change path: the entry found before any trace
  `tracing`          what forward is traced with, the one trace, the entry's key
  `capture`          the Dynamo trace of forward, dynamic dimensions marked
  `guards`           Dynamo's guards turned into the plain checks an entry carries
  `hf_state`         a transformers model's config fields, recorded beside the guards
  `split`            the captured graph cut at the splitting ops
  `units`            every unique piece for every compile range and size, compiled or reused
  `compile`          one piece through Inductor for one range or size
  `check_budget`     the sizes the self-check runs at, within a memory budget
  `shape_guards`     Inductor's shape guards, read by a grammar (never eval'd)
  `parallel`         units compiled in forked worker processes (--jobs)
  `reuse`            the index of built artifacts (local and remote) a rebuild takes units from
  `native`           an Inductor piece exported as wrapper code plus kernel libraries
  `reproducible`     kernel libraries as the same bytes on every builder
  `vec_isa_memo`     Inductor's vector-ISA probes, remembered in the cache dir
  `inductor_passes`  your Inductor passes, resolved and keyed
  `entry`            an entry's contents: split, compile, check against Inductor, write
  `publish`          staged, signed and published by one rename under the entry's lock
  `result`           PrecompileResult and `precompile --json`
  `parts`            a model served as parts: one precompile per part
  `trace_once`       DYNAMO_TRACE_ONCE: one trace, the whole graph through Inductor in memory
  `_torch_compat`    every torch-internal API the compile side relies on, by feature detection
"""
