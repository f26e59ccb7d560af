"""Forget-It-All for ComfyUI: multi-concept unlearning by pruning concept-sensitive FF weights."""

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES


class FIAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> FIAExtension:
    return FIAExtension()
