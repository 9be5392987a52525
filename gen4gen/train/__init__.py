"""Personalisation training (``stage=train``): Custom Diffusion and LoRA on an exported dataset."""
