"""`make sabotage`: prove that each guarantee's tests can fail.

For each guarantee (docs/guarantees.md), break the code that holds it, on purpose, run
the tests that prove it, and expect them to FAIL; then restore the code, whatever
happened. A guarantee whose tests still pass with its guard removed is reported as NOT
CAUGHT (and the command exits 1). The results go to benchmarks/results/sabotage.md.

    python scripts/sabotage.py [NAME...]     # all, or the named sabotages
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sabotage:
    name: str
    guarantee: str
    what: str  # the guard removed, in words
    edits: tuple[tuple[str, str, str], ...]  # (file, exact old text, new text)
    tests: tuple[str, ...]


SABOTAGES = [
    Sabotage(
        "build-in-place",
        "Crash safety",
        "build the entry in entries/ itself instead of a staging dir published by one rename",
        (
            (
                "aotcache/backend/publish.py",
                "    staging = root.new_staging_dir(entry_id)\n",
                "    staging = root.entry_dir(entry_id)\n    staging.mkdir(parents=True, exist_ok=True)\n",
            ),
            (
                "aotcache/backend/publish.py",
                "            path = root.publish(staging, entry_id)\n",
                "            path = staging\n",
            ),
        ),
        ("tests/test_fault.py::test_sigkill_inside_every_stage_and_at_every_failpoint",),
    ),
    Sabotage(
        "no-build-lock",
        "Concurrency",
        "no per-entry lock around the build",
        (
            (
                "aotcache/backend/publish.py",
                'with held(root.lock(entry_id), build.progress.waiting, "builds the same entry"):',
                "with contextlib.nullcontext():",
            ),
            ("aotcache/backend/publish.py", "import logging\n", "import contextlib\nimport logging\n"),
        ),
        ("tests/test_fault.py::test_four_processes_same_key_compile_once",),
    ),
    Sabotage(
        "no-sha256-check",
        "Corruption caught before anything runs (both formats)",
        "files are not compared with their recorded sha256",
        (("aotcache/store/checks.py", "        if digest != record.sha256:", "        if False:"),),
        ("tests/test_fault.py::test_every_file_truncated_or_flipped_is_caught_before_anything_runs",),
    ),
    Sabotage(
        "no-environment-check",
        "Wrong environment: never run",
        "recorded environment factors are not compared with this host's",
        (
            (
                "aotcache/store/checks.py",
                "    return explain(recorded, [f for f in host if f.name in names])",
                "    return []",
            ),
        ),
        (
            "tests/test_serve_path.py::test_verify_by_key_compares_the_recorded_environment",
            "tests/test_trust.py::test_a_remote_unit_built_for_another_environment_is_compiled_here",
        ),
    ),
    Sabotage(
        "paths-may-leave",
        "Hostile input: paths outside the entry",
        "a manifest path with '..' is accepted",
        (
            (
                "aotcache/store/schema.py",
                '        raise SchemaError(where, f"path {path!r} leaves the entry")',
                "        pass",
            ),
        ),
        ("tests/test_fault.py::test_manifest_paths_outside_the_entry_are_refused",),
    ),
    Sabotage(
        "no-signature-check",
        "Trust: a trusted key refuses unsigned or altered entries",
        "the signature check accepts anything",
        (("aotcache/store/signing.py", "        verify(entry_id, manifest_bytes, signature, key)", "        pass"),),
        ("tests/test_fault.py::test_signed_entries_and_what_a_trusted_key_refuses",),
    ),
    Sabotage(
        "links-followed",
        "Nothing outside the cache dir is read, moved or deleted",
        "the cache dir's folders are opened following links",
        (
            (
                "aotcache/store/safefs.py",
                "DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC",
                "DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC",
            ),
        ),
        ("tests/test_hostile.py::test_a_symlinked_root_folder_is_never_followed",),
    ),
    Sabotage(
        "child-does-not-check",
        "verify --run: the child checks again before importing anything",
        "the child process skips its own checks",
        (
            (
                "aotcache/verify/child.py",
                "needs = (check_entry(cache_dir, entry, trusted_key, strict).load_needs or []) if entry else []",
                "needs = []",
            ),
        ),
        ("tests/test_hostile.py::test_the_verify_run_child_checks_again_before_importing_anything",),
    ),
    Sabotage(
        "remote-unit-not-listed",
        "A unit is taken from the remote only where a checked manifest lists it",
        "remote reuse takes the artifact the unit index names without the manifest listing the unit key",
        (
            (
                "aotcache/fleet/unit_reuse.py",
                "        name = manifest.unit_keys.get(unit_key)\n",
                "        name = manifest.unit_keys.get(unit_key) or next(iter(manifest.unit_keys.values()), None)\n",
            ),
        ),
        (
            "tests/test_ci_sharing.py::test_a_unit_comes_only_from_a_manifest_that_lists_it_and_is_signed_as_the_build_signs",
        ),
    ),
    Sabotage(
        "remote-unit-unsigned",
        "A signed build reuses only artifacts the same key signed (remote too)",
        "remote reuse does not check the remote entry's signature",
        (
            (
                "aotcache/fleet/unit_reuse.py",
                "fetch_manifest(self.remote, record, self.verify_signature)",
                "fetch_manifest(self.remote, record, None)",
            ),
        ),
        (
            "tests/test_ci_sharing.py::test_a_unit_comes_only_from_a_manifest_that_lists_it_and_is_signed_as_the_build_signs",
        ),
    ),
    Sabotage(
        "kernels-keep-build-paths",
        "Two runners build the same bytes",
        "the compiler commands get no -ffile-prefix-map: kernels record the Inductor cache dir they were built in",
        (
            (
                "aotcache/backend/_torch_compat.py",
                '        return f"{compiler} {flags} {rest}"\n',
                "        return command_line(self)\n",
            ),
        ),
        ("tests/test_ci_sharing.py::test_two_runners_build_the_same_bytes_and_the_second_push_is_present",),
    ),
    Sabotage(
        "reuse-unsigned",
        "A signed build reuses only artifacts the same key signed",
        "artifact reuse does not check the source entry's signature",
        (("aotcache/backend/reuse.py", "check_sources=False, verify_signature=check", "check_sources=False"),),
        ("tests/test_reuse.py::test_a_signed_build_reuses_only_what_the_same_key_signed",),
    ),
    Sabotage(
        "pull-publishes-unchecked",
        "A pull publishes only what matches the manifest",
        "downloaded files are not checked (in staging, nor by the load's checks)",
        (
            (
                "aotcache/fleet/pull.py",
                "        if staging.part_sha256(blob.path) == (blob.size, blob.sha256):",
                "        if True:",
            ),
            ("aotcache/store/checks.py", "        if digest != record.sha256:", "        if False:"),
        ),
        ("tests/test_fleet.py::test_a_blob_changed_in_the_registry_storage_is_refused_and_nothing_is_published",),
    ),
    Sabotage(
        "no-pull-lock",
        "Replicas on one host download once",
        "no per-lookup-key lock around a load's pull",
        (
            (
                "aotcache/serve/loader.py",
                'with held(root.lock(f"{key}.pull"), _log_wait, "pulls the same entry", timeout=deadline.remaining()):',
                "if True:",
            ),
        ),
        ("tests/test_hostile_remote.py::test_two_replicas_that_miss_at_once_download_each_blob_once",),
    ),
    Sabotage(
        "push-overwrites",
        "Push never overwrites",
        "an entry the remote holds with other bytes is not refused",
        (("aotcache/fleet/push.py", "        if not existing.same_bytes(record):", "        if False:"),),
        ("tests/test_fleet.py::test_push_never_overwrites_an_entry_with_other_bytes",),
    ),
    Sabotage(
        "redirects-anywhere",
        "A remote's redirects stay within the policy",
        "every redirect is followed",
        (("aotcache/fleet/http.py", "            if refusal:", "            if False:"),),
        (
            "tests/test_hostile_remote.py::test_a_blob_redirected_to_plain_http_on_another_host_is_refused",
            "tests/test_hostile_remote.py::test_an_upload_redirected_to_another_host_sends_nothing_there",
        ),
    ),
    Sabotage(
        "credentials-over-http",
        "Credentials go only to https token services",
        "a plain-http token service off loopback gets the credentials",
        (("aotcache/fleet/oci.py", 'if urlsplit(realm).scheme != "https" and not (', "if False and not ("),),
        ("tests/test_hostile_remote.py::test_credentials_never_go_to_a_token_service_over_plain_http",),
    ),
    Sabotage(
        "no-deadline",
        "No pull or load(remote=...) outlives its deadline",
        "the overall deadline is never checked between chunks",
        (("aotcache/fleet/http.py", "        deadline.check(url, what)\n", "        pass\n"),),
        ("tests/test_hostile_remote.py::test_a_remote_that_drips_is_cut_off_at_its_deadline",),
    ),
    Sabotage(
        "gzip-inflated",
        "Memory stays bounded whatever a remote sends",
        "bodies are read decoded (gzip inflated) and without a cap",
        (
            (
                "aotcache/fleet/http.py",
                "    for data in response.iter_raw():",
                "    for data in response.iter_bytes():",
            ),
            ("aotcache/fleet/http.py", '    if encoding not in ("identity", ""):', "    if False:"),
            (
                "aotcache/fleet/http.py",
                "            if len(body) >= ERROR_BODY_BYTES:\n                break",
                "            pass",
            ),
        ),
        ("tests/test_hostile_remote.py::test_memory_stays_bounded_whatever_the_body",),
    ),
    Sabotage(
        "remote-text-raw",
        "Text from a remote cannot forge output",
        "error messages keep control characters",
        (("aotcache/errors.py", "    if not value.isprintable():", "    if False:"),),
        ("tests/test_hostile_remote.py::test_text_from_the_remote_cannot_forge_output",),
    ),
    Sabotage(
        "staging-written-through",
        "A pull never writes through a link planted in its staging dir",
        "partial files are opened following links, and kept whatever they are",
        (
            (
                "aotcache/fleet/staging.py",
                "_WRITE_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC",
                "_WRITE_FLAGS = os.O_RDWR | os.O_CLOEXEC",
            ),
            ("aotcache/fleet/staging.py", "        if _single_regular(fd):", "        if True:"),
        ),
        ("tests/test_hostile_remote.py::test_a_planted_partial_file_is_never_written_through",),
    ),
    Sabotage(
        "softcap-dropped",
        "HF: every attention argument honoured (Gemma 2's softcap)",
        "the op ignores softcap",
        (("aotcache/ops.py", "    if softcap == 0.0 and sinks is None:", "    if sinks is None:"),),
        (
            "tests/test_hf.py::test_softcap_and_sinks_are_computed_as_transformers_computes_them",
            "tests/test_hf.py::test_every_architecture_is_split_at_attention_and_equal_to_eager",
        ),
    ),
    Sabotage(
        "unknown-is-stale",
        "A source not found from here is unknown, never stale",
        "a traced file that cannot be found counts as changed",
        (
            (
                "aotcache/key/sources.py",
                "            result.unknown.append(source)",
                '            result.changed.append(Difference(source.path, source.sha256[:12], "missing"))',
            ),
        ),
        ("tests/test_usability.py::test_a_source_not_found_from_here_is_unknown_never_stale",),
    ),
    Sabotage(
        "trace-trusted-everywhere",
        "Shape guards: a size where forward branches is refused, never wrong",
        "sizes the guards exclude are compiled from the same trace, unchecked",
        (
            (
                "aotcache/backend/units.py",
                "    def _trace_holds(self, size: int) -> bool:\n",
                "    def _trace_holds(self, size: int) -> bool:\n        return True\n",
            ),
        ),
        ("tests/test_guards.py::test_a_size_where_forward_branches_is_refused_never_wrong",),
    ),
    Sabotage(
        "shared-inductor-cache",
        "An inductor-format load runs only the verified bytes, never the shared Inductor cache",
        "inductor-format artifacts are loaded through the shared Inductor/Triton caches",
        (
            (
                "aotcache/formats/inductor.py",
                "            with torch_internals.private_compile_caches(caches):",
                "            if True:",
            ),
        ),
        ("tests/test_formats.py::test_an_inductor_load_never_runs_what_the_shared_cache_holds",),
    ),
    Sabotage(
        "padding-unchecked",
        "CUDA graphs: padding that changes the real rows is refused",
        "padded sizes are captured without the padding check",
        (("aotcache/serve/cudagraph/runner.py", "                self.check_padding(key.num_tokens)\n", ""),),
        ("tests/test_cudagraph.py::test_padding_that_changes_the_real_rows_is_refused_naming_piece_and_size",),
    ),
    Sabotage(
        "weights-cloned",
        "CUDA graphs: copy_inputs never clones weights",
        "copy_inputs clones every input, weights included",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "        return not kept or (self.copy_inputs and not self.memory.is_weight(tensor))",
                "        return not kept or self.copy_inputs",
            ),
        ),
        ("tests/test_cudagraph.py::test_copy_inputs_never_clones_weights",),
    ),
    Sabotage(
        "graph-outputs-held",
        "CUDA graphs: graph memory does not grow with the sizes captured",
        "every graph's outputs are held, for every size (FULL included)",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "        entry.output = (spec, [self.backend.forget(x) if isinstance(x, torch.Tensor) else x for x in leaves])",
                "        entry.output = (spec, leaves)",
            ),
        ),
        (
            "tests/test_cudagraph.py::test_graph_memory_does_not_grow_with_the_sizes_captured",
            "tests/test_cudagraph.py::test_full_graphs_hold_no_output_per_size",
        ),
    ),
    Sabotage(
        "cpu-model-captured",
        "CUDA graphs: a CPU model on a GPU host gets no graphs",
        "the backend is chosen by whether the host has CUDA",
        (("aotcache/serve/cudagraph/backends.py", '    if device.type != "cuda":', "    if False:"),),
        ("tests/test_cudagraph.py::test_a_cpu_model_gets_no_graphs_even_on_a_gpu_host",),
    ),
    Sabotage(
        "dynamic-launch-ignored",
        "load_needs: kernels the static launcher cannot take need a C compiler",
        "the recorded kernels that Triton's own launcher loads are ignored",
        (
            (
                "aotcache/formats/needs.py",
                "            if artifact.dynamic_launch or unknown or (triton and not static_launcher):",
                "            if unknown or (triton and not static_launcher):",
            ),
        ),
        ("tests/test_formats.py::test_kernels_the_static_launcher_cannot_take_make_loading_need_a_c_compiler",),
    ),
    Sabotage(
        "no-workers",
        "Parallel builds: workers really compile, and the bytes are the same",
        "--jobs falls back to one process",
        (
            (
                "aotcache/backend/parallel.py",
                '    if device_type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():',
                "    if True:",
            ),
        ),
        ("tests/test_parallel.py::test_parallel_units_are_byte_identical_to_a_sequential_build",),
    ),
    Sabotage(
        "pass-not-in-unit-key",
        "A unit compiled with one Inductor pass is never reused for another",
        "the pass slots left out of the Inductor settings digest in every unit's key",
        (
            (
                "aotcache/backend/_torch_compat.py",
                '_NOT_IN_THE_CODE = frozenset({"compile_threads", "worker_start_method", "cpp.vec_isa_ok"})',
                '_NOT_IN_THE_CODE = frozenset({"compile_threads", "worker_start_method", "cpp.vec_isa_ok", '
                '"post_grad_custom_post_pass"})',
            ),
        ),
        ("tests/test_custom_compile.py::test_an_inductor_pass_runs_in_every_compile_and_loading_never_imports_it",),
    ),
    Sabotage(
        "pass-not-a-source",
        "An edited Inductor pass makes its entries stale",
        "the passes' files left out of the traced sources",
        (("aotcache/backend/tracing.py", "    captured.traced_files |= pass_files\n", ""),),
        ("tests/test_custom_compile.py::test_an_edited_pass_makes_its_entry_stale_naming_the_pass",),
    ),
    Sabotage(
        "custom-op-rules-not-traced",
        "custom_ops decide what a CustomOp layer runs in the trace",
        "the layers not bound to the config's rules before the trace (the choices still recorded)",
        (
            (
                "aotcache/backend/precompile.py",
                "    extra = extra_build_factors(passes, bind_custom_ops(model, config), request.part_of)",
                "    extra = extra_build_factors(passes, {'rms_norm': config.is_custom_op_enabled('rms_norm')}, request.part_of)",
            ),
        ),
        ("tests/test_custom_compile.py::test_custom_ops_make_two_entries_whose_miss_names_the_rules",),
    ),
    Sabotage(
        "state-not-checked",
        "Never a wrong number: a setting the trace read is checked at load",
        "an entry's traced state is not compared with the model (load, verify)",
        (
            (
                "aotcache/store/checks.py",
                "    if model is not None:\n        problem = state_problem(",
                "    if False:\n        problem = state_problem(",
            ),
        ),
        (
            "tests/test_traced_state.py::test_each_changed_setting_is_a_miss_that_names_it",
            "tests/test_traced_state.py::test_the_example_models_eps_is_checked",
        ),
    ),
    Sabotage(
        "guards-not-recorded",
        "Never a wrong number: Dynamo's guards are what an entry records",
        "the trace's guards are not handed to the recorder (only the transformers config fallback remains)",
        (("aotcache/backend/_torch_compat.py", "        on_guards(list(entries))\n", "        pass\n"),),
        ("tests/test_traced_state.py::test_each_changed_setting_is_a_miss_that_names_it",),
    ),
    Sabotage(
        "state-not-in-entry-id",
        "Never a wrong number: models that differ in a setting get entries of their own",
        "the traced state's digest left out of the build factors (the entry id)",
        (
            (
                "aotcache/backend/tracing.py",
                '        Factor("traced_state", captured.state.digest),  # a model with another setting: another entry\n',
                "",
            ),
        ),
        ("tests/test_traced_state.py::test_precompiling_a_changed_model_builds_its_own_entry",),
    ),
    Sabotage(
        "state-not-on-no-change-path",
        "Never a wrong number: the no-change precompile path takes only this model's entry",
        "the no-change path does not check the entry's traced state against the model",
        (
            (
                "aotcache/backend/unchanged.py",
                "        if state_problems(manifest.traced_state, self.model):",
                "        if False:",
            ),
        ),
        ("tests/test_traced_state.py::test_the_no_change_path_takes_only_the_entry_of_this_model",),
    ),
    Sabotage(
        "state-not-checked-before-a-pull",
        "Never a wrong number: a load pulls only an entry whose settings hold",
        "a load's pull does not judge the remote entries' traced state from their manifests",
        (
            (
                "aotcache/fleet/pull.py",
                "        elif model is not None and (settings := traced_state_problems(manifest.traced_state, model)):",
                "        elif False and (settings := traced_state_problems(manifest.traced_state, model)):",
            ),
        ),
        ("tests/test_traced_state.py::test_a_load_pulls_nothing_whose_settings_differ",),
    ),
    Sabotage(
        "no-hf-config-fields",
        "Never a wrong number: a transformers config's fields are checked (the fallback)",
        "the config's fields are not recorded (Dynamo's guards only)",
        (("aotcache/backend/capture.py", "    hf_state.add_config_fields(recorder, model)\n", ""),),
        ("tests/test_traced_state.py::test_a_checkpoint_whose_config_differs_in_one_number_is_a_miss_naming_it",),
    ),
    Sabotage(
        "unchecked-guard-dropped",
        "Never a wrong number: a guard with no plain check fails the precompile",
        "guards with no plain check are dropped instead of refused",
        (("aotcache/backend/guards.py", "        if self.refused:\n", "        if False:\n"),),
        ("tests/test_traced_state.py::test_state_an_entry_cannot_check_fails_the_precompile_by_name",),
    ),
    Sabotage(
        "no-change-path-unsigned",
        "A signing build takes no unsigned entry before its trace",
        "the no-change remote path checks no signature",
        (("aotcache/backend/unchanged.py", "    check = remote.verify_signature\n", "    check = None\n"),),
        ("tests/test_trust.py::test_a_signing_build_takes_no_unsigned_entry_before_its_trace",),
    ),
    Sabotage(
        "torch-not-in-unit-key",
        "A unit is never reused under another torch",
        "torch's version left out of the unit key",
        (("aotcache/backend/reuse.py", '        "torch": torch.__version__,\n', ""),),
        ("tests/test_trust.py::test_a_unit_key_names_the_torch_that_compiled_it",),
    ),
    Sabotage(
        "attention-arguments-dropped",
        "HF: an attention argument the op would drop is refused",
        "the attention function does not check its arguments (dropout, head_mask, encoder_hidden_states, output_attentions)",
        (("aotcache/hf.py", "    _check_kwargs(module, dropout, kwargs)\n", "    pass\n"),),
        ("tests/test_trust.py::test_each_attention_argument_the_op_would_drop_is_refused_and_an_empty_one_passes",),
    ),
    Sabotage(
        "hf-routing-unchecked",
        "HF: an hf: target whose attention is not routed is refused",
        "hf.spec builds the model without counting the op's calls",
        (("aotcache/hf.py", "            check_routed(model, example_inputs(2))\n", "            pass\n"),),
        ("tests/test_trust.py::test_an_hf_target_whose_attention_is_not_routed_is_refused_by_name",),
    ),
    Sabotage(
        "authorization-to-any-origin",
        "Credentials go only to their own origin",
        "send attaches the Authorization to every hop, whatever its origin",
        (
            (
                "aotcache/fleet/http.py",
                "            if authorization and _origin(url) == owner:",
                "            if authorization:",
            ),
        ),
        (
            "tests/test_hostile_remote.py::test_a_redirect_to_https_storage_on_another_host_still_pulls_without_credentials",
            "tests/test_hostile_remote.py::test_a_token_service_that_redirects_elsewhere_gets_the_credentials_no_further",
        ),
    ),
    Sabotage(
        "authorization-in-headers",
        "Credentials have one way out",
        "an Authorization passed in headers is sent",
        (
            (
                "aotcache/fleet/http.py",
                '        plain = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}',
                "        plain = dict(headers or {})",
            ),
        ),
        ("tests/test_hostile_remote.py::test_an_authorization_header_passed_by_hand_is_never_sent",),
    ),
    Sabotage(
        "no-usage-stamp",
        "A load stamps its entry as used (LRU eviction)",
        "the loader does not stamp the entry it loaded",
        (("aotcache/serve/loader.py", "    root.mark_used(loaded.entry_id)\n", "    pass\n"),),
        ("tests/test_trust.py::test_a_load_stamps_its_entry_as_used",),
    ),
    Sabotage(
        "clear-held-locks",
        "clear keeps a lock a builder holds",
        "idle-lock removal does not try the lock first",
        (
            (
                "aotcache/store/root.py",
                "                        with FileLock(str(self.locks / name), timeout=0):",
                "                        with contextlib.nullcontext():",
            ),
        ),
        ("tests/test_trust.py::test_clear_keeps_a_lock_a_builder_holds",),
    ),
    Sabotage(
        "no-source-date",
        "SOURCE_DATE_EPOCH dates the manifest",
        "the manifest's created ignores SOURCE_DATE_EPOCH",
        (("aotcache/backend/entry.py", "        created=source_date(),\n", "        created=None,\n"),),
        ("tests/test_trust.py::test_source_date_epoch_dates_the_manifest",),
    ),
    Sabotage(
        "unsigned-remote-trusted",
        "An unsigned build takes nothing from a remote unless asked",
        "an unsigned build takes unsigned remote entries and units without --trust-unsigned-remote",
        (("aotcache/backend/remote_trust.py", "    elif trust_unsigned:\n", "    elif True:\n"),),
        ("tests/test_ci_sharing.py::test_a_forged_remote_puts_no_code_into_a_build",),
    ),
    Sabotage(
        "remote-guards-unread",
        "A guard string from another entry is never evaluated as code",
        "a reused unit's guards are not read by the grammar before it is taken",
        (
            (
                "aotcache/backend/units.py",
                "        unreadable = readable_guards(reused.guards, unit)\n",
                "        unreadable = None\n",
            ),
        ),
        ("tests/test_ci_sharing.py::test_a_forged_remote_puts_no_code_into_a_build",),
    ),
    Sabotage(
        "remote-units-any-host",
        "A remote unit is checked for this host as a local one is",
        "remote unit reuse skips the environment and host checks",
        (("aotcache/fleet/unit_reuse.py", "        unfit = self._unfit(manifest)\n", '        unfit = ""\n'),),
        ("tests/test_trust.py::test_a_remote_unit_built_for_another_environment_is_compiled_here",),
    ),
    Sabotage(
        "id-not-covering-the-manifest",
        "The entry id covers what the manifest holds",
        "a manifest's id and summary factors are not checked against what it holds",
        (("aotcache/store/schema.py", "        _check_id_covers_the_manifest(body)\n", "        pass\n"),),
        ("tests/test_trust.py::test_an_entry_id_must_cover_what_its_manifest_holds",),
    ),
    Sabotage(
        "no-change-stops-at-a-damaged-candidate",
        "The no-change path tries each candidate on its own",
        "a damaged remote candidate ends the search",
        (
            (
                "aotcache/backend/unchanged.py",
                '            log.warning("remote %s: entry %s is not taken before the trace: %s", url, entry_id, _why(exc))\n            continue\n',
                '            log.warning("remote %s: entry %s is not taken before the trace: %s", url, entry_id, _why(exc))\n            return None\n',
            ),
        ),
        ("tests/test_ci_sharing.py::test_the_no_change_path_passes_over_a_damaged_candidate",),
    ),
    Sabotage(
        "host-paths-in-the-manifest",
        "Two runners build the same bytes (no host paths)",
        "the manifest's config records the cache dir and debug dump path",
        (
            (
                "aotcache/backend/entry.py",
                "    return {**config.to_dict(), **dict.fromkeys(HOST_PATH_FIELDS)}",
                "    return config.to_dict()",
            ),
        ),
        ("tests/test_ci_sharing.py::test_two_runners_build_the_same_bytes_and_the_second_push_is_present",),
    ),
    Sabotage(
        "absolute-target-recorded",
        "Two runners build the same bytes (a portable TARGET)",
        "the recorded TARGET is kept as given (absolute)",
        (
            (
                "aotcache/backend/publish.py",
                '            manifest.recorded["target"] = portable_target(build.origin) if build.origin else None',
                '            manifest.recorded["target"] = build.origin',
            ),
        ),
        ("tests/test_ci_sharing.py::test_two_runners_build_the_same_bytes_and_the_second_push_is_present",),
    ),
    Sabotage(
        "graphs-not-replayed",
        "CUDA graphs: outputs come from replays",
        "the wrapper runs the piece eagerly instead of replaying its graph",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "        return self._replay(entry, args)\n",
                "        return self.runnable(*args)\n",
            ),
        ),
        (
            "tests/test_cudagraph.py::test_captured_in_inference_mode_replays_outside_it",
            "tests/test_cudagraph.py::test_a_runner_on_a_second_device_captures_and_replays_inside_it",
        ),
    ),
    Sabotage(
        "singleton-named-once",
        "Never a wrong number: a module-level singleton is the one its module holds now",
        "an object's global name, once found, is trusted without reading the module's global again",
        (
            (
                "aotcache/store/traced_state.py",
                "or holds_global(value, cached[1]):",
                "or True:",
            ),
        ),
        ("tests/test_traced_state.py::test_a_module_level_singleton_is_checked_by_its_global_name",),
    ),
    Sabotage(
        "singleton-by-class",
        "Never a wrong number: a module-level singleton is the one its module holds now",
        "an object is named by any global of its class's module holding an object of its type",
        (
            (
                "aotcache/store/plain.py",
                "if item is value and type(name) is str:",
                "if type(item) is type(value) and type(name) is str:",
            ),
        ),
        ("tests/test_traced_state.py::test_a_module_level_singleton_is_checked_by_its_global_name",),
    ),
    Sabotage(
        "hf-built-with-weights",
        "Real scale: weights are never needed to precompile",
        "an hf: TARGET is precompiled from a model with all its (random) weights built",
        (
            (
                "aotcache/hf.py",
                "        model_without_weights=build_without_weights,\n",
                "        model_without_weights=None,\n",
            ),
        ),
        ("tests/test_scale.py::test_a_model_whose_weights_exceed_the_budget_precompiles_within_it",),
    ),
    Sabotage(
        "check-on-placeholders",
        "Real scale: the self-check of a model without weights runs on numbers",
        "the eager runs of the self-check bind the uninitialised placeholders instead of random values",
        (
            (
                "aotcache/backend/units.py",
                "        if not self.without_weights:\n            return values\n        if self._check_template",
                "        if True:\n            return values\n        if self._check_template",
            ),
        ),
        ("tests/test_scale.py::test_a_model_whose_weights_exceed_the_budget_precompiles_within_it",),
    ),
    Sabotage(
        "check-weights-per-layer",
        "Real scale: the self-check's random weights are one of each unique piece's",
        "every piece gets random values of its own, so N identical layers cost N layers",
        (
            (
                "aotcache/backend/weights.py",
                "            if same is None or same.shape",
                "            if True or same.shape",
            ),
        ),
        ("tests/test_scale.py::test_a_model_whose_weights_exceed_the_budget_precompiles_within_it",),
    ),
    Sabotage(
        "check-at-the-range-maximum",
        "Real scale: the self-check is bounded in memory",
        "a range is checked at its largest size, whatever that holds",
        (
            (
                "aotcache/backend/check_budget.py",
                "    mid = max(low, min((unit.start + unit.end) // 2, cap))\n",
                "    mid = unit.end\n",
            ),
        ),
        ("tests/test_scale.py::test_a_model_whose_weights_exceed_the_budget_precompiles_within_it",),
    ),
    Sabotage(
        "over-budget-size-checked",
        "Real scale: the self-check is bounded in memory",
        "a compile size is run by the self-check whatever it holds",
        (
            (
                "aotcache/backend/units.py",
                "                sizes = [unit.start] if unit.start <= self.check_cap else []\n",
                "                sizes = [unit.start]\n",
            ),
        ),
        ("tests/test_scale.py::test_a_model_whose_weights_exceed_the_budget_precompiles_within_it",),
    ),
    Sabotage(
        "hf-routing-unchecked-in-graph",
        "HF: an hf: target whose attention is not routed is refused",
        "precompile (a model without weights) does not count the op in the traced graph",
        (
            (
                "aotcache/hf.py",
                '        _require_routed(config, getattr(config, "model_type", "the model"), calls)\n',
                "        pass\n",
            ),
        ),
        ("tests/test_trust.py::test_an_hf_target_whose_attention_is_not_routed_is_refused_by_name",),
    ),
    Sabotage(
        "spec-check-graph-dropped",
        "HF: an hf: target whose attention is not routed is refused",
        "the CLI's precompile does not pass the spec's graph check on",
        (
            (
                "aotcache/cli/app.py",
                "progress=progress, check_graph=spec.check_graph, **options",
                "progress=progress, **options",
            ),
        ),
        ("tests/test_scale.py::test_a_spec_check_graph_reaches_the_cli_precompile",),
    ),
    Sabotage(
        "inconsistent-capture-maximum",
        "vLLM parity: a config vLLM refuses is refused when it is built, never a crash later",
        "a capture maximum other than the largest capture size is accepted (the dispatcher's padding table fails)",
        (
            (
                "aotcache/configuration/compilation.py",
                "        elif sizes[-1] != self.max_cudagraph_capture_size:\n",
                "        elif False:\n",
            ),
        ),
        ("tests/test_vllm_parity.py::test_cudagraph_sizes_post_init_refused",),
    ),
    Sabotage(
        "padded-compile-size",
        "vLLM parity: a config vLLM refuses is refused when it is built, never a crash later",
        "a compile size that padding would skip under CUDA graphs is accepted",
        (
            (
                "aotcache/configuration/compilation.py",
                "            if size <= capture[-1] and size not in capture:\n",
                "            if False:\n",
            ),
        ),
        ("tests/test_vllm_parity.py::test_compile_sizes_padding_validation_refused",),
    ),
    Sabotage(
        "unknown-splitting-op",
        "Bad input is exit 2 with one line",
        "a splitting op torch does not know is traced and built unsplit",
        (("aotcache/backend/tracing.py", "        if name in known:\n", "        if True:\n"),),
        ("tests/test_hostile.py::test_a_splitting_op_torch_does_not_know_is_a_config_error_with_the_nearest_name",),
    ),
    Sabotage(
        "hit-needs-write",
        "Hostile or odd input: a read-only cache dir",
        "precompile asks for write access before it looks for the entry",
        (("aotcache/backend/precompile.py", "    root.check_is_directory()\n", "    root.ensure_writable()\n"),),
        ("tests/test_hostile.py::test_read_only_mount_exits_3_and_loses_nothing",),
    ),
    Sabotage(
        "own-sources-by-path-only",
        "Whether an entry is stale never depends on the working directory",
        "a traced file of an imported package installed by an import hook (aotcache in editable mode) is looked "
        "for only under sys.path",
        (("aotcache/key/sources.py", "    return _in_imported_package(portable)\n", "    return None\n"),),
        ("tests/test_hf.py::test_aotcache_own_sources_are_found_from_any_directory",),
    ),
    Sabotage(
        "killed-build-debris-kept",
        "Crash safety: nothing a killed build left blocks or litters the next one",
        "the next build of a key does not remove what a killed build of it left in staging",
        (("aotcache/backend/publish.py", "    _sweep_abandoned_builds(root, entry_id)\n", ""),),
        ("tests/test_fault.py::test_the_next_build_of_a_key_removes_what_a_killed_build_of_it_left",),
    ),
    Sabotage(
        "mistyped-remote-is-empty",
        "A mistyped remote is an error, not an empty remote",
        "a pull from a remote that does not exist reports nothing to pull",
        (("aotcache/fleet/pull.py", "    if why is not None:\n", "    if False:\n"),),
        ("tests/test_fleet.py::test_a_mistyped_remote_is_an_error_and_an_empty_one_is_not",),
    ),
    Sabotage(
        "torch-log-on-one-line-error",
        "Bad input is exit 2 with one line",
        "torch's own ERROR log (a traceback from the trace) is printed before the one-line error",
        (("aotcache/cli/common.py", "        import torch  # noqa: F401\n", "\n"),),
        ("tests/test_hostile.py::test_a_trace_error_is_one_line_and_torchs_own_log_only_with_verbose",),
    ),
    Sabotage(
        "padding-tolerance-fp32",
        "CUDA graphs: padding is refused only where tokens mix, not for rounding",
        "the padding check's tolerance is fp32's for every dtype",
        (
            (
                "aotcache/serve/cudagraph/padding.py",
                "    rtol = max(1e-3, 4 * torch.finfo(real.dtype).eps)\n",
                "    rtol = 1e-3\n",
            ),
            ("aotcache/serve/cudagraph/padding.py", "atol=max(1e-4, rtol * scale)", "atol=1e-4"),
        ),
        (
            "tests/test_cudagraph.py::test_the_padding_check_allows_the_rounding_of_the_dtype",
            "tests/test_cudagraph.py::test_a_bf16_llama_with_padding_loads_and_is_right[eager]",
        ),
    ),
    Sabotage(
        "padding-fatal-unless-strict",
        "CUDA graphs: a padding refusal is a miss of those sizes unless strict",
        "a PaddingError escapes load(strict=False)",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "                    if strict:\n                        raise\n",
                "                    raise\n",
            ),
        ),
        ("tests/test_cudagraph.py::test_a_model_whose_last_op_mixes_tokens_is_refused_or_right[FULL]",),
    ),
    Sabotage(
        "padding-compiled-pieces-only",
        "CUDA graphs: padding that changes the real rows is refused",
        "only compiled pieces are compared, not splitting ops or the output",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "        names = loaded.piece_order\n",
                "        names = self.compiled_pieces\n",
            ),
            ("aotcache/serve/cudagraph/runner.py", '[*names, "output"]', "names"),
        ),
        ("tests/test_cudagraph.py::test_a_model_whose_last_op_mixes_tokens_is_refused_or_right[PIECEWISE]",),
    ),
    Sabotage(
        "pieces-ordered-as-text",
        "CUDA graphs: pieces run and are checked in forward's order",
        "piece names are ordered as text (submod_10 before submod_2)",
        (
            (
                "aotcache/serve/runtime.py",
                '    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\\d+)", name)])',
                "    return sorted(names)",
            ),
        ),
        ("tests/test_cudagraph.py::test_twelve_layers_serve_right_through_piecewise_graphs_twice_at_every_size",),
    ),
    Sabotage(
        "replay-checks-every-input",
        "CUDA graphs: per-call host work does not grow with the weight count",
        "every in-place input (each weight) is compared one by one on every replay",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "        if not all(map(operator.is_, live, entry.seen)) or len(live) != len(entry.seen):\n",
                "        if True:\n",
            ),
        ),
        ("tests/test_cudagraph.py::test_replay_host_work_does_not_grow_with_the_weights",),
    ),
    Sabotage(
        "empty-graph-replayed",
        "CUDA graphs: a piece without kernels is not a load error",
        "an empty graph (views only) is replayed like any other",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "        if entry.graph is None:\n            return self.runnable(*args)\n        return self._replay(entry, args)",
                "        return self._replay(entry, args)",
            ),
        ),
        ("tests/test_cudagraph.py::test_a_piece_without_kernels_is_not_a_load_error",),
    ),
    Sabotage(
        "no-warmup-before-capture",
        "CUDA graphs: every key is warmed up before its capture",
        "cudagraph_num_of_warmups 0 captures cold",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "        self.num_warmups = max(1, config.cudagraph_num_of_warmups)\n",
                "        self.num_warmups = config.cudagraph_num_of_warmups\n",
            ),
        ),
        ("tests/test_cudagraph.py::test_every_key_is_warmed_up_before_its_capture",),
    ),
    Sabotage(
        "graph-pool-per-runner",
        "CUDA graphs: one graph pool, stream and lock per device",
        "each runner makes its own pool and stream",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "        self.shared = shared_graphs(backend)\n",
                "        self.shared = type(shared_graphs(backend))(backend.new_pool(), backend.new_stream())\n",
            ),
        ),
        ("tests/test_cudagraph.py::test_runners_share_one_pool_stream_and_lock_per_device",),
    ),
    Sabotage(
        "default-capture-stream",
        "CUDA graphs: a model on a second device captures on a stream of that device",
        "captures use torch's default capture stream",
        (
            (
                "aotcache/serve/cudagraph/wrapper.py",
                "self.backend.capture(self.runnable, inputs, self.pool, self.stream)",
                "self.backend.capture(self.runnable, inputs, self.pool, None)",
            ),
        ),
        ("tests/test_cudagraph.py::test_models_on_two_devices_capture_on_their_own_streams",),
    ),
    Sabotage(
        "no-graph-lock",
        "CUDA graphs: concurrent callers take turns",
        "a call fills the static buffers and replays without the device's lock",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "        with self.shared.lock, _serving(), self.backend.device_scope():\n            values",
                "        with _serving(), self.backend.device_scope():\n            values",
            ),
        ),
        ("tests/test_cudagraph.py::test_concurrent_callers_take_turns",),
    ),
    Sabotage(
        "gc-unfrozen",
        "CUDA graphs: an application's gc.freeze survives the capture session",
        "the session freezes and unfreezes even when the application froze objects",
        (("aotcache/serve/cudagraph/backends.py", "    if gc.get_freeze_count() > 0:\n", "    if False:\n"),),
        ("tests/test_cudagraph.py::test_an_application_gc_freeze_survives_the_capture_session",),
    ),
    Sabotage(
        "input-device-unchecked",
        "CUDA graphs: an input on another device is refused at every size",
        "argument devices are not checked",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "            if value.device != buffer.device:\n",
                "            if False:\n",
            ),
        ),
        ("tests/test_cudagraph.py::test_an_input_on_another_device_is_refused_at_every_size",),
    ),
    Sabotage(
        "device-name-keyed",
        "The key holds what the code depends on: a GPU of the same capability hits",
        "the GPU's product name is a key factor",
        (
            (
                "aotcache/key/env.py",
                '        Factor("cuda.device_index", index),\n',
                '        Factor("cuda.device_index", index),\n        Factor("cuda.device_name", torch.cuda.get_device_name(index)),\n',
            ),
        ),
        ("tests/test_key.py::test_a_gpu_of_the_same_capability_and_versions_has_the_same_key",),
    ),
    Sabotage(
        "load-needs-unknown-launch",
        "load_needs: kernels the static launcher cannot take need a C compiler",
        "an artifact whose static-launcher kernels are unknown, or a host that turns the static launcher off, needs no C compiler",
        (
            (
                "aotcache/formats/needs.py",
                "            unknown = triton and artifact.dynamic_launch is None\n",
                "            unknown = False\n",
            ),
            (
                "aotcache/formats/needs.py",
                '    static_launcher = envs.get(envs.TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER) in (None, "1")\n',
                "    static_launcher = True\n",
            ),
        ),
        ("tests/test_formats.py::test_kernels_the_static_launcher_cannot_take_make_loading_need_a_c_compiler",),
    ),
    Sabotage(
        "stats-file-trusted",
        "Stats files from other hosts are data: a damaged or hostile one is skipped with a warning",
        "a stats file's counts are not checked to be numbers",
        (
            (
                "aotcache/stats/records.py",
                "    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:\n",
                "    if False:\n",
            ),
        ),
        ("tests/test_stats.py::test_a_hostile_stats_file_is_skipped_with_a_warning",),
    ),
    Sabotage(
        "stats-fail-the-load",
        "Recording stats never fails a load or a call",
        "a stats dir that cannot be written raises",
        (("aotcache/stats/recorder.py", "        except OSError as exc:\n", "        except ValueError as exc:\n"),),
        ("tests/test_stats.py::test_recording_never_fails_a_load",),
    ),
    Sabotage(
        "stats-counted-twice",
        "A process's stats count once, however many sources hold its file",
        "the same process file read locally and from the remote is summed twice",
        (("aotcache/stats/summary.py", "    records = newest_per_process(records)\n", "\n"),),
        ("tests/test_stats.py::test_the_same_process_file_from_two_sources_counts_once",),
    ),
    Sabotage(
        "stats-one-file-for-all",
        "Two processes never write one stats file",
        "every process writes the same file name",
        (
            (
                "aotcache/stats/recorder.py",
                '        name = f"{host}-{os.getpid()}-{started}.json"\n',
                '        name = f"{host}.json"\n',
            ),
        ),
        ("tests/test_stats.py::test_two_replicas_calls_are_summed_by_size_with_their_hit_rate",),
    ),
    Sabotage(
        "explain-reads-manifests",
        "explain reads no artifact byte: records only",
        "lookup factors are always read from the manifest blob, never from the record",
        (("aotcache/fleet/explain.py", "    if record.lookup_factors is not None:\n", "    if False:\n"),),
        ("tests/test_explain.py::test_a_file_remote_with_another_config_would_miss_without_reading_a_blob",),
    ),
    Sabotage(
        "explain-trusts-record-factors",
        "A remote's records are data: factors that do not hash to the entry's key are skipped",
        "a record's factors are taken without checking that they hash to its lookup key",
        (("aotcache/fleet/explain.py", '    if lookup_hash(factors) != entry_id.split("-")[0]:\n', "    if False:\n"),),
        ("tests/test_explain.py::test_a_record_whose_factors_fail_the_checks_is_skipped_with_a_warning",),
    ),
    Sabotage(
        "explain-factor-json-unchecked",
        "A remote's records are data: factors are plain JSON, checked",
        "factor names are not checked",
        (
            (
                "aotcache/fleet/remote.py",
                "        if not isinstance(name, str) or not 0 < len(name) <= MAX_FACTOR_NAME or not name.isprintable():\n",
                "        if False:\n",
            ),
        ),
        ("tests/test_explain.py::test_parse_factors_reads_plain_data_only",),
    ),
    Sabotage(
        "partition-count-unchecked",
        "CUDA graphs per Inductor partition: a load checks the partitions the artifact records",
        "the partitions Inductor hands over are not compared with the recorded count",
        (
            (
                "aotcache/formats/partitions.py",
                "        if found != list(range(recorded)) or any(slot.count != recorded for slot in self.slots):\n",
                "        if False:\n",
            ),
        ),
        ("tests/test_graph_partition.py::test_inductors_own_hook_hands_each_partition_to_a_slot_with_vllms_options",),
    ),
    Sabotage(
        "partition-hook-left-set",
        "CUDA graphs per Inductor partition: Inductor's process-wide hook is set only while an artifact loads",
        "the partition wrapper hook is left registered after the load",
        (
            (
                "aotcache/formats/torch_internals.py",
                "            inductor_utils.set_customized_partition_wrappers(previous)\n",
                "            pass\n",
            ),
        ),
        ("tests/test_graph_partition.py::test_inductors_own_hook_hands_each_partition_to_a_slot_with_vllms_options",),
    ),
    Sabotage(
        "partition-options-ignored",
        "CUDA graphs per Inductor partition: vLLM's options per partition",
        "every partition hands its capture-time output back as an owning tensor",
        (
            (
                "aotcache/serve/cudagraph/runner.py",
                "            weak_ref_output=slot.last,\n",
                "            weak_ref_output=False,\n",
            ),
        ),
        ("tests/test_graph_partition.py::test_inductors_own_hook_hands_each_partition_to_a_slot_with_vllms_options",),
    ),
    Sabotage(
        "partition-piecewise-refused",
        "CUDA graphs per Inductor partition: accepted where torch has the hook",
        "use_inductor_graph_partition with PIECEWISE is refused on every torch",
        (
            (
                "aotcache/configuration/compilation.py",
                "            if self.use_inductor_graph_partition and old_torch:\n",
                "            if self.use_inductor_graph_partition:\n",
            ),
        ),
        ("tests/test_graph_partition.py::test_partitions_with_piecewise_graphs_need_a_torch_with_partition_wrappers",),
    ),
]


def run(sabotage: Sabotage) -> tuple[bool, float, str]:
    """(whether the tests failed, seconds, the last lines of their output)."""
    originals: dict[Path, str] = {}
    try:
        for rel, old, new in sabotage.edits:
            path = REPO / rel
            text = originals.setdefault(path, path.read_text())
            current = path.read_text()
            if current.count(old) != 1:
                raise SystemExit(f"{sabotage.name}: {rel} does not hold the guard text exactly once: {old!r}")
            path.write_text(current.replace(old, new))
            assert text  # the original is kept for the restore
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *sabotage.tests],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        return done.returncode != 0, time.perf_counter() - started, tail
    finally:
        for path, text in originals.items():
            path.write_text(text)


def main(names: list[str]) -> int:
    chosen = [s for s in SABOTAGES if not names or s.name in names]
    rows = ["| guarantee | guard removed | test | caught |", "| --- | --- | --- | --- |"]
    missed = []
    for sabotage in chosen:
        caught, seconds, tail = run(sabotage)
        verdict = "yes" if caught else "**NOT CAUGHT**"
        print(f"{sabotage.name}: {verdict} ({seconds:.0f} s)\n  {tail.replace(chr(10), chr(10) + '  ')}", flush=True)
        tests = ", ".join(f"`{t.split('::')[-1]}`" for t in sabotage.tests)
        rows.append(f"| {sabotage.guarantee} | {sabotage.what} | {tests} | {verdict} |")
        if not caught:
            missed.append(sabotage.name)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sabotage.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    if missed:
        print(f"NOT CAUGHT: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
