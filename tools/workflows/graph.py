"""Workflow specs (Node, Note, Workflow) and what ComfyUI makes of them: the API-format prompt ("Export (API)")
and the UI workflow (LiteGraph JSON, schema 0.4) the editor opens, both built from the node schemas of a running
ComfyUI (`/object_info`: widget order, socket slots, display names)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.workflows.files import MODEL_LINKS

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
UI_DIR = REPO_ROOT / "example_workflows"
API_DIR = HERE / "api"
"""The API-format twins live outside example_workflows/ because ComfyUI lists every *.json there as a template."""

PACK_ID = "comfyui-causvid"  # registry id (pyproject [project] name)
PACK_VERSION = "0.1.0"
COMFY_VERSION = "0.3.75"
FRONTEND_VERSION = "1.32.9"  # the frontend ComfyUI 0.3.75 pins

UPLOAD_BUTTON_VALUE = "image"
"""A combo with `image_upload` (LoadImage) gets the frontend's upload button widget after the node's
widgets; the editor saves its value ("image") in widgets_values, though it is never sent to the server."""

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
"""Node types the editor draws but never sends to the server (absent from /object_info)."""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# -------------------------------------------------------------------------------------------------
# Specs


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    size: tuple[float, float]
    widgets: dict[str, Any] = field(default_factory=dict)
    """Widget values by input name; omitted widgets take the schema default."""
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Socket input name -> (source node id, source output slot)."""
    control: str | None = None
    """control_after_generate mode ("randomize" / "fixed") of the node's seed widget."""
    title: str | None = None
    color: str | None = None
    bgcolor: str | None = None


@dataclass
class Note:
    id: int
    pos: tuple[float, float]
    size: tuple[float, float]
    text: str
    title: str = "Read me: models and settings"


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    note: Note
    groups: list[tuple[str, list[int]]]
    files: dict[str, list[str]]
    """models folder -> the file names the workflow expects there."""
    images: list[str] = field(default_factory=list)
    """Files the workflow expects in ComfyUI's input folder (LoadImage)."""


# -------------------------------------------------------------------------------------------------
# Schemas (from /object_info)


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    widget: bool
    optional: bool
    options: dict


def input_slots(schema: dict) -> list[Slot]:
    """The node's inputs in schema order (required, then optional), as the frontend builds them."""
    order = schema.get("input_order") or {k: list(v) for k, v in schema["input"].items()}
    slots = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = schema["input"][section][name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list):  # V1 combo: the option list itself
                opts = {**opts, "options": kind}
                kind = "COMBO"
            widget = kind in WIDGET_TYPES and not opts.get("forceInput")
            slots.append(Slot(name, kind, widget, section == "optional", opts))
    return slots


def widget_slots(schema: dict) -> list[Slot]:
    return [s for s in input_slots(schema) if s.widget]


def socket_slots(schema: dict) -> list[Slot]:
    return [s for s in input_slots(schema) if not s.widget]


def widget_value(node: Node, slot: Slot) -> Any:
    if slot.name in node.widgets:
        return node.widgets[slot.name]
    if "default" in slot.options:
        return slot.options["default"]
    raise ValueError(f"node {node.id} ({node.type}): no value for widget '{slot.name}' and no default")


# -------------------------------------------------------------------------------------------------
# Generation


def build_api(wf: Workflow, object_info: dict) -> dict:
    """The API-format prompt, as the frontend's "Export (API)" writes it."""
    prompt = {}
    for node in wf.nodes:
        schema = object_info[node.type]
        inputs: dict[str, Any] = {}
        for slot in input_slots(schema):
            if slot.widget:
                inputs[slot.name] = widget_value(node, slot)
            elif slot.name in node.links:
                src, out = node.links[slot.name]
                inputs[slot.name] = [str(src), out]
        prompt[str(node.id)] = {"inputs": inputs, "class_type": node.type,
                                "_meta": {"title": node.title or schema["display_name"]}}
    return prompt


def _topological_order(wf: Workflow) -> dict[int, int]:
    deps = {n.id: {src for src, _ in n.links.values()} for n in wf.nodes}
    deps[wf.note.id] = set()
    order: dict[int, int] = {}
    pending = sorted(deps)
    while pending:
        ready = [i for i in pending if deps[i] <= set(order)]
        if not ready:
            raise ValueError(f"{wf.name}: the graph has a cycle")
        # the note first, then by id (LiteGraph computes something similar)
        for i in sorted(ready, key=lambda i: (i != wf.note.id, i)):
            order[i] = len(order)
        pending = [i for i in pending if i not in order]
    return order


def _properties(node: Node, schema: dict) -> dict:
    props: dict[str, Any] = {"Node name for S&R": node.type}
    if schema.get("python_module", "").startswith("custom_nodes."):
        props.update({"cnr_id": PACK_ID, "ver": PACK_VERSION})
    else:
        props.update({"cnr_id": "comfy-core", "ver": COMFY_VERSION})
    models = [MODEL_LINKS[v] for v in node.widgets.values() if isinstance(v, str) and v in MODEL_LINKS]
    if models:
        props["models"] = models
    return props


def build_ui(wf: Workflow, object_info: dict) -> dict:
    """The UI (LiteGraph, schema version 0.4) workflow the editor opens."""
    link_rows = []  # [id, from_node, from_slot, to_node, to_slot, type]
    by_id = {n.id: n for n in wf.nodes}
    for node in wf.nodes:
        sockets = socket_slots(object_info[node.type])
        for to_slot, slot in enumerate(sockets):
            if slot.name in node.links:
                src, out = node.links[slot.name]
                out_type = object_info[by_id[src].type]["output"][out]
                link_rows.append([len(link_rows) + 1, src, out, node.id, to_slot, out_type])
    order = _topological_order(wf)
    nodes = []
    for node in wf.nodes:
        schema = object_info[node.type]
        inputs = []
        for index, slot in enumerate(socket_slots(schema)):
            link = next((row[0] for row in link_rows if row[3] == node.id and row[4] == index), None)
            entry = {"localized_name": slot.name, "name": slot.name, "type": slot.type}
            if slot.optional:
                entry["shape"] = 7  # LiteGraph's hollow dot for optional inputs
            entry["link"] = link
            inputs.append(entry)
        outputs = []
        for index, (out_type, out_name) in enumerate(zip(schema["output"], schema["output_name"])):
            links = [row[0] for row in link_rows if row[1] == node.id and row[2] == index]
            outputs.append({"localized_name": out_name, "name": out_name, "type": out_type,
                            "slot_index": index, "links": links})
        values: list[Any] = []
        for slot in widget_slots(schema):
            values.append(widget_value(node, slot))
            if slot.options.get("control_after_generate"):
                if node.control not in ("fixed", "increment", "decrement", "randomize"):
                    raise ValueError(f"node {node.id}: give control= for the '{slot.name}' widget")
                values.append(node.control)
        if any(slot.options.get("image_upload") for slot in widget_slots(schema)):
            values.append(UPLOAD_BUTTON_VALUE)
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                                 "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs,
                                 "outputs": outputs}
        if node.title:
            entry["title"] = node.title
        entry["properties"] = _properties(node, schema)
        entry["widgets_values"] = values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color, node.bgcolor
        nodes.append(entry)
    note = wf.note
    nodes.insert(0, {"id": note.id, "type": "MarkdownNote", "pos": list(note.pos), "size": list(note.size),
                     "flags": {}, "order": order[note.id], "mode": 0, "inputs": [], "outputs": [],
                     "title": note.title, "properties": {}, "widgets_values": [note.text],
                     "color": "#432", "bgcolor": "#653"})
    groups = []
    for gid, (title, members) in enumerate(wf.groups, start=1):
        boxes = [(by_id[i].pos, by_id[i].size) for i in members]
        x0 = min(p[0] for p, _ in boxes) - 10
        y0 = min(p[1] for p, _ in boxes) - 30 - 50  # node title bar (30) + group title (50)
        x1 = max(p[0] + s[0] for p, s in boxes) + 10
        y1 = max(p[1] + s[1] for p, s in boxes) + 10
        groups.append({"id": gid, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": "#3f789e",
                       "font_size": 24, "flags": {}})
    all_ids = [n.id for n in wf.nodes] + [note.id]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/example_workflows/{wf.name}")),
        "revision": 0,
        "last_node_id": max(all_ids),
        "last_link_id": len(link_rows),
        "nodes": nodes,
        "links": link_rows,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [560, 140]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def load_ui(name: str) -> dict:
    return json.loads((UI_DIR / f"{name}.json").read_text())
