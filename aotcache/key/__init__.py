"""The cache key: what an entry is for, as named factors, so that a miss can be explained.

Owns the factors and their hashing (`factors`), the environment a serving host can
describe without a compiler and the host checks against a build record (`env`), the
model's identity (`identity`), traced source files (`sources`), the lookup key of a
(config, model) pair (`lookup`) and the C/C++ runtime versions kernels need (`elfdeps`).
Depends only on the shared modules at the top of the package.
"""
