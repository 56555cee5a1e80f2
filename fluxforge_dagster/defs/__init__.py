"""Each module registers its own pieces through one `@dg.definitions` function built from the
FluxForge config (read when the code location loads, never at import)."""
