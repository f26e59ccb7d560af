"""What both worlds share: the ComfyUI SD1.5-layout model and latents (`model`), the loader
(`loader`), the seeded training loop (`training`), what a reader is (`readers`) and the
forgetting protocol on the engine's entry points (`forgetting`)."""
