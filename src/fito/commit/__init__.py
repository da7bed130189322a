"""The executor's package (see docs/architecture.md): below `ckpt/` and `dcp/`, above `protocol/`, `coord/`,
`storage/` and `format/`. Today it holds the one decision choice (`fito.commit.decision`)."""
