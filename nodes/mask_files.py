"""FIA Save Mask / FIA Load Mask: safetensors files in ComfyUI's models/fia_masks folder."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ..fia_engine import FIAInputError, load_mask
from ..fia_engine.core.mask_io import check_save_prefix, save_numbered_mask
from .boundary import FIANode
from .types import CATEGORY, Mask

MASK_FOLDER = "fia_masks"


def register_mask_folder() -> None:
    """Makes models/fia_masks known to ComfyUI, beside any `fia_masks:` entry of the user's
    extra_model_paths.yaml (registered before custom nodes load, with no extension filter)."""
    folder_paths.add_model_folder_path(MASK_FOLDER, os.path.join(folder_paths.models_dir, MASK_FOLDER))
    folder_paths.folder_names_and_paths[MASK_FOLDER][1].add(".safetensors")


register_mask_folder()


class FIASaveMask(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIASaveMask",
            display_name="FIA Save Mask",
            category=CATEGORY,
            description="Writes the mask to models/fia_masks as .safetensors with its concepts, settings, "
                        "architecture and source-model fingerprint, to share or reuse.",
            is_output_node=True,
            inputs=[
                Mask.Input("mask", tooltip="The mask to save."),
                io.String.Input("filename_prefix", default="fia/mask",
                                tooltip="File name prefix inside models/fia_masks; a counter is appended."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written.")],
        )

    @classmethod
    def execute(cls, mask, filename_prefix) -> io.NodeOutput:
        root = folder_paths.get_folder_paths(MASK_FOLDER)[0]
        check_save_prefix(root, filename_prefix)  # before ComfyUI's helper makes any folder
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, root)
        path = save_numbered_mask(mask, folder, name, counter)  # the counter another process takes is skipped
        shown = os.path.relpath(path, root)
        return io.NodeOutput(str(path), ui=ui.PreviewText(f"saved {shown}: {mask.pruned_count} weights, "
                                                          f"{', '.join(mask.concepts)}"))


class FIALoadMask(FIANode):
    INPUT_FIXES = {"mask_name": "Save a mask with FIA Save Mask first, or refresh the list (R in the editor)"}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIALoadMask",
            display_name="FIA Load Mask",
            category=CATEGORY,
            description="Reads a mask written by FIA Save Mask from models/fia_masks.",
            inputs=[
                io.Combo.Input("mask_name", options=folder_paths.get_filename_list(MASK_FOLDER),
                               tooltip="A .safetensors mask file in models/fia_masks."),
            ],
            outputs=[Mask.Output(display_name="mask", tooltip="The loaded mask, for FIA Apply Unlearning Mask.")],
        )

    @classmethod
    def fingerprint_inputs(cls, mask_name):
        """The file's time, so a file saved again under its name is read again; execute refuses a non-name."""
        path = folder_paths.get_full_path(MASK_FOLDER, mask_name) if isinstance(mask_name, str) else None
        return os.path.getmtime(path) if path else mask_name

    @classmethod
    def execute(cls, mask_name) -> io.NodeOutput:
        path = folder_paths.get_full_path(MASK_FOLDER, mask_name)
        if path is None:
            raise FIAInputError(f"mask_name: '{mask_name}' is no longer in models/fia_masks. {cls.INPUT_FIXES['mask_name']}.")
        return io.NodeOutput(load_mask(path))
