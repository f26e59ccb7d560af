"""The part of the engine that talks to ComfyUI: layers of a ModelPatcher, recording while its
sampler runs, the reference schedule, saliency runs, masks as weight patches, and the whole method.
"""
