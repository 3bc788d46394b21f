"""Models as partitionable layer chains: registry, manifests, store, zoo, profiles, span executor.

torch-only, no networking. Entry points: `zoo.get_manifest`, `profiling.profile`,
`executor.SpanExecutor`, `io` (user inputs and JSON outputs), `importers` (your own models).
See docs/models.md.
"""
