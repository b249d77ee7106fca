"""Studies: methods × attacks × seeds from one file (see :mod:`obliviate.study.spec`)."""
