"""Benchmarks and diagnostics of motionmae: part of the source tree, not of the installed package.

Run them from a clone, as `python -m bench.<name>` or, for `speed`, `loader` and `quality`,
as `motionmae bench <name>`. Each prints the machine, its config and its figures;
quoted figures go to docs/benchmarks.md with the command that produced them. The
shared timing helpers are in `bench.timing`.
"""
