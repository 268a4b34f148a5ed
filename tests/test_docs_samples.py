"""The operator session in docs/commands.md is what the commands print (issue 37's
drift: a boxed table and 23-character keys in the docs, borderless tables and
12-character keys in reality). scripts/docs_samples.py writes the block from the real
commands; this runs them again and compares, with what changes from run to run masked."""

from __future__ import annotations

import sys

from _support import REPO

sys.path.insert(0, str(REPO / "scripts"))
import docs_samples


def test_the_docs_operator_session_is_what_the_commands_print(tmp_path) -> None:
    cache = tmp_path / "c"
    docs_samples.precompile(cache)
    real = docs_samples.normalized(docs_samples.session(cache))
    documented = docs_samples.normalized(docs_samples.documented())
    assert real == documented, "docs/commands.md drifted: run `python scripts/docs_samples.py` to regenerate it"


def test_the_masking_keeps_the_shape_of_a_table() -> None:
    """Keys, sizes and times are masked; borders, headers and column order are not."""
    boxed = "┃ KEY ┃ MODEL ┃\n│ d7d511adfcf7e95b-7a9969 │ TinyLlama │"
    plain = "KEY MODEL\nd7d511adfcf7 TinyLlama"
    assert docs_samples.normalized(boxed) != docs_samples.normalized(plain)
    assert docs_samples.normalized("d7d511adfcf7  1.4 MB  just now") == docs_samples.normalized(
        "0123456789ab  630.8 KB  3h ago"
    )
