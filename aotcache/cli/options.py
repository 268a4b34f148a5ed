"""The options several commands share (TARGET, config files and JSON, hf: switches,
signing, jobs) and how they become a ModelSpec and a CompilationConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aotcache.errors import ConfigError

from .common import import_cwd, parse_int_list


def config_from(
    spec_config: dict[str, Any], config_file: Path | None, json_text: str | None, overrides: dict[str, Any]
) -> Any:
    """The config a command uses: the spec's own fields < pyproject < --config < -O JSON
    < the command's own options."""
    from aotcache.configuration import load_config

    return load_config(
        base=spec_config, pyproject=True, config_file=config_file, json_text=json_text, overrides=overrides
    )


def spec_of(target: str) -> Any:
    from aotcache.target import as_spec, import_target

    import_cwd()
    return as_spec(import_target(target), origin=target)


def with_hf_options(target: str, hf_class: str | None, no_split: bool = False) -> str:
    """`hf:PATH` with --hf-class X is the TARGET `hf:PATH@X`, and with --no-split
    `hf:PATH+whole` (recorded so, for verify --run)."""
    if hf_class is None and not no_split:
        return target
    if not target.startswith("hf:"):
        raise ConfigError("hf_class" if hf_class else "no_split", hf_class or True, "only with an hf:PATH TARGET")
    from aotcache.hf import WHOLE

    base = target.removesuffix(WHOLE)
    if hf_class is not None:
        base = f"{base.split('@')[0]}@{hf_class}"
    return base + (WHOLE if no_split or target.endswith(WHOLE) else "")


NoSplit = Annotated[
    bool,
    typer.Option("--no-split", help="For hf:PATH, compile the model whole instead of splitting it at attention."),
]
HfClass = Annotated[
    str | None,
    typer.Option(
        "--hf-class",
        metavar="CLASS",
        help="For hf:PATH, the transformers class to build [default: AutoModelForCausalLM].",
    ),
]


Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="package.module:attr or path/to/file.py:attr (a ModelSpec, model class, factory or model), "
        "or hf:PATH, a Hugging Face checkpoint directory.",
        show_default=False,
    ),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", metavar="FILE", help="TOML file of config fields.")]
ConfigJson = Annotated[
    str | None,
    typer.Option(
        "--compilation-config",
        "-O",
        metavar="JSON",
        help="JSON object of config fields (as vLLM's --compilation-config), or an optimization level 0-3 "
        "(as vLLM's -O: 0 no compilation, 1-3 VLLM_COMPILE).",
    ),
]
# The config fields precompile and verify both take as options: the same TARGET and
# flags give the same config, so the same key, in both.
CompileSizes = Annotated[str | None, typer.Option(metavar="SIZES", help="Concrete sizes to compile, e.g. 1,2,4,8.")]
SplitPoints = Annotated[str | None, typer.Option(metavar="SIZES", help="compile_ranges_split_points, e.g. 16,32.")]
MaxTokens = Annotated[int | None, typer.Option(metavar="N", help="Largest size served.")]
SplittingOps = Annotated[str | None, typer.Option(metavar="OPS", help="Ops to split at, e.g. myns::attention.")]
Backend = Annotated[str | None, typer.Option(metavar="NAME", help="inductor or eager.")]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs", "-j", min=1, metavar="N", help="Worker processes compiling units [default: the cores available]."
    ),
]
SignKey = Annotated[
    Path | None, typer.Option("--sign-key", metavar="FILE", help="Sign the entry (Ed25519 PEM or HMAC secret).")
]


def precompile_overrides(
    compile_sizes: str | None,
    split_points: str | None,
    max_num_batched_tokens: int | None,
    splitting_ops: str | None,
    backend: str | None,
) -> dict[str, Any]:
    """Config fields given as precompile's own options (None: not given)."""
    return {
        "compile_sizes": parse_int_list(compile_sizes, "compile_sizes"),
        "compile_ranges_split_points": parse_int_list(split_points, "compile_ranges_split_points"),
        "max_num_batched_tokens": max_num_batched_tokens,
        "splitting_ops": splitting_ops.split(",") if splitting_ops else None,
        "backend": backend,
    }


SizesFrom = Annotated[
    str | None,
    typer.Option(
        "--sizes-from",
        metavar="SOURCE",
        help="Add to compile_sizes the sizes replicas served most through a range: a stats dir, or a remote they "
        "pushed stats to (`push --stats`).",
    ),
]
MaxNewSizes = Annotated[
    int, typer.Option("--max-new-sizes", min=0, metavar="N", help="At most N sizes from --sizes-from.")
]
TrustedKey = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        envvar="AOTCACHE_TRUSTED_KEY",
        metavar="FILE",
        help="Refuse entries not signed by this key (as a load with this trusted key does).",
    ),
]
StatsDir = Annotated[
    Path | None,
    typer.Option(
        "--stats-dir",
        metavar="DIR",
        help="The stats dir replicas write (push sends it with --stats) [default: AOTCACHE_STATS_DIR, else "
        "<cache dir>/stats].",
        show_default=False,
    ),
]
