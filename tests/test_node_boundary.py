"""The node boundary: every input of every node is checked against its schema before the node runs,
including the values only the HTTP API can send (literals in socket inputs, unlisted combo values)."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
from concurrent.futures import ThreadPoolExecutor

import folder_paths
import pytest
from chain import fuse_node, saliency_node, select_node
from comfy_api.internal import make_locked_method_func
from comfy_api.latest import io

from devkit import tiny


@pytest.fixture()
def mask_folder(tmp_path, monkeypatch):
    folder = tmp_path / "masks"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "fia_masks", ([str(folder)], {".safetensors"}))
    return folder


def tree(root) -> dict[str, int]:
    """Every path under `root` with its size (-1 for folders): what a refused save must leave as it was."""
    return {os.path.relpath(os.path.join(d, n), root): (-1 if n in dirs else os.path.getsize(os.path.join(d, n)))
            for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture(scope="module")
def values(pack, tiny_clip):
    """One valid value per socket type."""
    model = tiny.tiny_sd15_patcher(seed=0)
    saliency = saliency_node(pack, model, tiny_clip, recorded_steps=1, prompt_pairs=1, concepts="cat\ndog")
    masks = select_node(pack, saliency)
    return {"MODEL": model, "CLIP": tiny_clip, "FIA_SALIENCY": saliency, "FIA_CONCEPT_MASKS": masks,
            "FIA_MASK": fuse_node(pack, masks)}


def valid_inputs(schema: io.Schema, sockets: dict) -> dict:
    """Every input of `schema` at a value its node accepts: widgets at their defaults, sockets connected."""
    chosen = {}
    for spec in schema.inputs:
        if isinstance(spec, io.Combo.Input):
            chosen[spec.id] = spec.default if spec.default is not None else spec.options[0]
        elif isinstance(spec, (io.Int.Input, io.Float.Input, io.String.Input)):
            chosen[spec.id] = spec.default if spec.default is not None else ""
        else:
            chosen[spec.id] = sockets[spec.get_io_type()]
    return chosen


def bad_values(spec: io.Input, sockets: dict) -> list:
    """Values the HTTP API (or a Python caller) can send that the input must refuse."""
    if isinstance(spec, io.Combo.Input):
        return [5, None, "not an option", [spec.options[0]]]
    if isinstance(spec, (io.Int.Input, io.Float.Input)):
        whole = isinstance(spec, io.Int.Input)
        bad = ["1", None, True, float("nan"), float("inf")] + ([1.5] if whole else [])
        bad += [spec.min - 1] if spec.min is not None else []
        return bad + ([spec.max + 1] if spec.max is not None else [])
    if isinstance(spec, io.String.Input):
        return [5, None, ["text"]]
    other = next(value for kind, value in sockets.items() if kind != spec.get_io_type())
    return ["not a mask", 5, {"a": 1}, other] + ([] if spec.optional else [None])


def test_every_input_of_every_node_refuses_what_its_schema_does_not_allow(pack, values, counted_model, mask_folder):
    """The rule the next input gets too: derived from each node's schema, run before its execute."""
    from fia_pack.nodes.boundary import check_inputs

    model, calls = counted_model
    saved = pack.nodes.FIASaveMask.execute(mask=values["FIA_MASK"], filename_prefix="listed")[0]
    before = tree(mask_folder)
    refused = 0
    for node in pack.nodes.NODES:
        schema = node.define_schema()
        good = valid_inputs(schema, values | {"MODEL": model})
        if node is pack.nodes.FIALoadMask:
            assert good["mask_name"] == os.path.basename(saved)  # the only file: the combo's first option
        check_inputs(schema, good)  # the baseline passes, so each refusal below is the one bad value's
        for spec in schema.inputs:
            for bad in bad_values(spec, values):
                with pytest.raises(pack.fia_engine.FIAInputError) as refusal:
                    node.execute(**(good | {spec.id: bad}))
                assert str(refusal.value).startswith(f"{spec.id}: "), (node.__name__, spec.id, bad, refusal.value)
                refused += 1
    assert refused > 250 and calls == [] and tree(mask_folder) == before  # 293 refusals in 8 nodes today


@pytest.mark.parametrize(("node_id", "inputs", "message"), [
    ("FIALoadMask", dict(mask_name=5), "mask_name: 5 is not one of "),
    ("FIALoadMask", dict(mask_name=None), "mask_name: null is not one of "),
    ("FIALoadMask", dict(mask_name="../../secrets.safetensors"), 'mask_name: "../../secrets.safetensors" is not one'),
    ("FIASaveMask", dict(mask="not a mask", filename_prefix="z"), 'mask: "not a mask" is not a FIA_MASK. Connect '),
    ("FIAApplyUnlearningMask", dict(mask="not a mask", strength=1.0, mode="patch"), "mask: .* is not a FIA_MASK"),
    ("FIAMaskInspector", dict(mask="not a mask"), "mask: .* is not a FIA_MASK"),
    ("FIASelectSensitiveNeurons", dict(saliency="x", r1=0.05, r2=0.0, r2_overrides="", method="fia"),
     'saliency: "x" is not a FIA_SALIENCY. Connect the output of FIA Compute Concept Saliency'),
    ("FIAFuseMasks", dict(concept_masks="x", alpha=0.0, fusion="union"), "concept_masks: .* is not a FIA_CONCEPT_MASKS"),
    ("FIAFuseMasks", dict(concept_masks=None, alpha=0.0, fusion="union"), "concept_masks: null is not a"),
])
def test_the_issues_api_only_inputs_are_refused_by_name(pack, values, mask_folder, node_id, inputs, message):
    """The values of issue #28 that raised TypeError or AttributeError inside the nodes."""
    node = getattr(pack.nodes, node_id)
    sockets = {"model": values["MODEL"]} if node_id == "FIAApplyUnlearningMask" else {}
    with pytest.raises(pack.fia_engine.FIAInputError, match=message):
        node.execute(**sockets, **inputs)
    assert tree(mask_folder) == {}


def test_a_new_node_and_input_are_checked_without_code_of_their_own(pack):
    """A node added later gets the boundary by subclassing FIANode, also through ComfyUI's own
    execution path (a locked clone of the class), and its inputs are never changed."""
    from fia_pack.nodes.boundary import FIANode
    from fia_pack.nodes.types import Mask

    ran = []

    class FIAFuture(FIANode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="FIAFuture", inputs=[
                io.Int.Input("count", default=2, min=1, max=9), io.Combo.Input("kind", options=["a", "b"]),
                Mask.Input("mask", optional=True), io.Float.Input("ratio", default=0.5, optional=True)])

        @classmethod
        def execute(cls, count, kind, mask=None, ratio=0.5):
            ran.append((count, kind, mask, ratio))
            return io.NodeOutput()

    run = make_locked_method_func(FIAFuture, "EXECUTE_NORMALIZED", FIAFuture.PREPARE_CLASS_CLONE({}))
    for call in (FIAFuture.execute, run):
        for bad, message in [(dict(count=10), "count: 10 is out of range. Use 1 to 9."),
                             (dict(kind="c"), 'kind: "c" is not one of a, b. Choose one of them.'),
                             (dict(mask="m"), 'mask: "m" is not a FIA_MASK'), (dict(ratio=None), "ratio: null is not")]:
            with pytest.raises(pack.fia_engine.FIAInputError, match=message):
                call(**(dict(count=3, kind="b") | bad))
        call(count=3, kind="b")
    assert ran == [(3, "b", None, 0.5)] * 2
    assert not hasattr(FIAFuture.execute.__func__.__wrapped__, "checks_inputs")  # wrapped once, not per clone


@pytest.mark.parametrize(("prefix", "message"), [
    ("x" * 250, r"the file name \(with the counter, extension and temporary suffix the save adds\) 'x{37}\.\.\.' is "
                "286 bytes; this file system allows 255. Shorten it by at least 31 bytes"),
    (("d" * 200 + "/") * 30 + "deep", r"the file's whole path would be [\d,]+ bytes; this file system allows 4,095"),
    ("d" * 256 + "/mask", "the folder name 'd{37}...' is 256 bytes; this file system allows 255"),
    ("é" * 128 + "/mask", "the folder name .* is 256 bytes"),  # bytes, not characters
    ("nul\u0000byte", r"contains a NUL character \(\\0\), which no file name may hold"),
    ("bad\ud800surrogate", "contains characters the file system cannot store"),
    ("../evil_up", "'../evil_up' points outside the mask folder. Use a name inside it"),
    ("fia/../../evil_up", ".* points outside the mask folder"),
    ("/tmp/evil_abs", ".* points outside the mask folder"),
    ("", "'' names no file. Enter a name such as fia/mask"),
    ("fia/..", ".* names no file"),
    ("taken_00001_.safetensors/mask", "'taken_00001_.safetensors' is a file, not a folder"),
])
def test_unwritable_save_prefixes_are_refused_before_anything_is_made(pack, values, mask_folder, prefix, message):
    (mask_folder / "taken_00001_.safetensors").write_bytes(b"another mask")
    outside = tree(mask_folder.parent)
    with pytest.raises(pack.fia_engine.FIAInputError, match="filename_prefix: " + message):
        pack.nodes.FIASaveMask.execute(mask=values["FIA_MASK"], filename_prefix=prefix)
    assert tree(mask_folder.parent) == outside  # no folder, temporary or empty file, inside or out
    assert not os.path.exists("/tmp/evil_abs_00001_.safetensors")


def test_the_longest_prefix_the_file_system_takes_is_saved(pack, engine, values, mask_folder):
    """The limit is the temporary's name (file name + 17 bytes): 219 bytes of prefix fit, 220 do not."""
    path = pack.nodes.FIASaveMask.execute(mask=values["FIA_MASK"], filename_prefix="sub/" + "x" * 219)[0]
    assert len(os.path.basename(path)) == 238 and engine.load_mask(path).concepts == ["cat", "dog"]
    with pytest.raises(engine.FIAInputError, match="Shorten it by at least 1 bytes"):
        pack.nodes.FIASaveMask.execute(mask=values["FIA_MASK"], filename_prefix="sub/" + "x" * 220)
    assert sorted(tree(mask_folder)) == ["sub", os.path.join("sub", os.path.basename(path))]


def test_the_python_api_checks_the_path_before_writing(engine, values, tmp_path):
    """save_mask and save_numbered_mask refuse by name too, and their cleanup never fails on the name."""
    mask = values["FIA_MASK"]
    with pytest.raises(engine.FIAInputError, match="path: contains a NUL character"):
        engine.save_mask(mask, tmp_path / "new" / "nul\u0000.safetensors")
    with pytest.raises(engine.FIAInputError, match="path: the file name .* is 272 bytes"):
        engine.save_mask(mask, tmp_path / "new" / ("x" * 243 + ".safetensors"))
    with pytest.raises(engine.FIAInputError, match="filename_prefix: the file name .* is 256 bytes"):
        engine.mask_io.save_numbered_mask(mask, tmp_path / "new", "x" * 220)
    assert tree(tmp_path) == {}


def test_a_mask_without_layers_is_refused_by_name(pack, engine, values, mask_folder):
    """Files cannot hold one (loading refuses it), the Python API can build one."""
    empty = dataclasses.replace(values["FIA_MASK"], layers=[], pruned={}, kept_agnostic={})
    message = "mask: it lists no layers, so it would change nothing"
    with pytest.raises(engine.FIAInputError, match=message):
        engine.apply_mask(values["MODEL"], empty)
    with pytest.raises(engine.FIAInputError, match=message):
        pack.nodes.FIAApplyUnlearningMask.execute(model=values["MODEL"], mask=empty, strength=1.0, mode="patch")
    with pytest.raises(engine.FIAInputError, match=message):
        pack.nodes.FIAMaskInspector.execute(mask=empty)
    with pytest.raises(engine.FIAInputError, match=message):
        pack.nodes.FIASaveMask.execute(mask=empty, filename_prefix="empty")
    no_layers = dataclasses.replace(values["FIA_CONCEPT_MASKS"], layers=[])
    with pytest.raises(engine.FIAInputError, match="concept_masks input 1: it lists no layers"):
        pack.nodes.FIAFuseMasks.execute(concept_masks=no_layers, alpha=0.0, fusion="union")
    assert tree(mask_folder) == {}


def test_without_hard_links_a_name_never_shows_an_empty_file_and_saves_never_collide(
        engine, values, mask_folder, monkeypatch):
    """A file system without hard links (FAT, some shares): os.link fails with EPERM as there.
    Every rename into a final name must find it free (no empty placeholder under it), concurrent
    saves still get one number each, and a file another process holds is never replaced."""
    real_replace = os.replace
    placeholders = []

    def no_link(src, dst, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def replace(src, dst, **kwargs):
        if str(dst).endswith(".safetensors") and os.path.lexists(dst):
            placeholders.append((dst, os.path.getsize(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "replace", replace)
    save = engine.mask_io.save_numbered_mask
    taken = mask_folder / "race_00001_.safetensors"
    taken.write_bytes(b"another process's mask")
    (mask_folder / "race_00002_.safetensors.claim.tmp").touch()  # a save holding number 2 right now
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: save(values["FIA_MASK"], mask_folder, "race", 1), range(8)))
    assert placeholders == []
    assert sorted(p.name for p in paths) == [f"race_{n:05}_.safetensors" for n in range(3, 11)]
    assert all(engine.load_mask(path).concepts == ["cat", "dog"] for path in paths)
    assert taken.read_bytes() == b"another process's mask"
    assert [p.name for p in mask_folder.glob("*.tmp")] == ["race_00002_.safetensors.claim.tmp"]


def test_refusals_quote_numbers_as_sent(pack):
    """NaN and infinities read as the engine's own refusals do; long texts are cut."""
    from fia_pack.nodes.boundary import _shown

    assert [_shown(v) for v in (math.nan, -math.inf, None, True, 5, "é")] == ["nan", "-inf", "null", "true", "5", '"é"']
    assert len(_shown("x" * 500)) == 61 and _shown(object()) == "a object"
