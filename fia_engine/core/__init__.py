"""The plain-torch part of the engine: statistics, selection, fusion, masks and their file format.

Nothing here imports ComfyUI; `fia_engine.host` is the part that talks to it.
"""
