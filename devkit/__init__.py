"""Development support shared by the tests, the benchmarks and ToyWorld: ComfyUI set up outside a
server (comfy_env) and tiny seeded models built with ComfyUI's own classes (tiny, tiny_archs).
Never loaded by ComfyUI; left out of the published pack (.comfyignore)."""
