"""End-to-end tests: the shipped workflows and the pack on a real, headless ComfyUI server."""
