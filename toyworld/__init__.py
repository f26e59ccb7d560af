"""ToyWorld: a tiny procedural image world and a CPU-trainable SD1.x-layout diffusion model.

ToyWorld runs on ComfyUI and on the engine, which imports ComfyUI: importing the package puts
ComfyUI on sys.path first (CPU unless CUDA is there; a running ComfyUI's settings are left alone).
"""

from devkit.comfy_env import setup_comfy

setup_comfy()
