"""The aotcache command line (typer)."""
