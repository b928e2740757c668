"""An example ablate plugin: one attention block (:class:`my_attention.blocks.GatedContext`)."""
