"""Renderer backends: NeRF, KiloNeRF, R2L behind one interface (``base.RendererBackend``)."""
