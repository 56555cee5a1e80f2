"""FluxForge: crypto market data from raw exchange messages to research-ready tables."""

from fluxforge.jitcache import configure as _configure_jit_cache

_configure_jit_cache()  # before any module defines a compiled function
