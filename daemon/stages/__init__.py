"""Pipeline stages: one module per stage, one file per backend."""
