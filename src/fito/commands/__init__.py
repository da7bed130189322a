"""One module per `fito` sub-command; each defines `register(subparsers)` which adds its parser
and sets `handler=` to a function taking the parsed args and returning an exit code."""
