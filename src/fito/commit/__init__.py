"""The executor's package (see docs/architecture.md): below `ckpt/` and `dcp/`, above `protocol/`, `coord/`,
`storage/` and `format/`. It holds the command interpreters (`executor`, `write`), the fence policy and attempt ids (`attempt`),
retention (`retention`), failure wording (`failure`), the manifest a decision names (`manifests`), the ranks'
collectives (`transport`) and the one decision choice (`decision`)."""
