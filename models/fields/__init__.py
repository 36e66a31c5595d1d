"""Neural fields (nn.Modules): NeRF MLP, KiloNeRF grid of tiny MLPs, R2L residual light field."""
