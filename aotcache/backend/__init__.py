"""The compile side: capture, split, Inductor compile, native export, precompile.

Imported only when something is compiled; the serving path never imports it.
"""
