"""The `ddetr` commands, one module each, all of one shape: HELP (one line for `ddetr -h`),
`add_arguments(parser)` and `run(args)` (args resolved and validated by
`ddetr.engine.options`). `ddetr.cli` only wires them; the work is in the engine's modules."""
