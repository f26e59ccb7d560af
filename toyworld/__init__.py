"""ToyWorld: a tiny procedural image world and a CPU-trainable SD1.x-layout diffusion model.

Submodules that touch ComfyUI (model, loader, report) import it lazily via comfy_env.
"""
