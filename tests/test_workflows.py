"""The example workflows (example_workflows/*.json, UI format) and their API-format twins
(tools/workflows/api/*.json), checked against the node schemas of a real ComfyUI 0.3.75 (/object_info).

* both twins are what tools/workflows/ generates (regenerate with `.venv/bin/python -m tools.workflows`);
* the UI files have the structure the frontend (1.32.9, pinned by ComfyUI 0.3.75) validates on load
  (a port of its zod schema `zComfyWorkflow`), and consistent links, slots and execution order;
* every node type exists, widget values match the schema (count, combo options, min/max/step), linked
  slots have matching types;
* each UI workflow, converted to API format the way the frontend does it, equals its twin;
* the workflows keep their promises (files, sizes, presets, fragment counts) and ComfyUI lists them as
  templates of this pack;
* the examples that the generic e2e run (tests/test_e2e_nodes.py) cannot cover as they are (a one-minute
  video, a start image) run end to end on tiny stand-ins, shortened where needed.
"""

from __future__ import annotations

import json
import math

import pytest

from tools import workflows as eg
from tools.comfy_server import MAIN_PACK_NAME, video_info
from tools.tiny import latent_size

pytestmark = pytest.mark.comfyui

NAMES = sorted(eg.WORKFLOWS)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


# -------------------------------------------------------------------------------------------------
# Schema reading, independent of tools/workflows (so that a bug there does not hide itself)


def schema_inputs(schema: dict) -> list[tuple[str, str, dict, bool]]:
    """[(name, type, options, optional)] in the order the frontend creates inputs and widgets."""
    order = schema.get("input_order") or {s: list(v) for s, v in schema["input"].items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = schema["input"][section][name]
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if isinstance(kind, list):
                kind, opts = "COMBO", {**opts, "options": kind}
            out.append((name, kind, opts, section == "optional"))
    return out


def is_widget(kind: str, opts: dict) -> bool:
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def widgets(schema: dict) -> list[tuple[str, str, dict]]:
    return [(n, k, o) for n, k, o, _ in schema_inputs(schema) if is_widget(k, o)]


def sockets(schema: dict) -> list[tuple[str, str, bool]]:
    return [(n, k, opt) for n, k, o, opt in schema_inputs(schema) if not is_widget(k, o)]


def check_widget_value(where: str, node_type: str, name: str, kind: str, opts: dict, value, promised: set[str]):
    """Problems with one widget value (empty list when it is fine)."""
    problems = []
    if kind == "COMBO":
        options = opts.get("options", [])
        if (node_type, name) in eg.FILE_WIDGETS and value not in options:
            # model files are absent from a fresh install: the workflow must promise them instead
            if value not in promised:
                problems.append(f"{where}: {name}={value!r} is neither installed nor a file the workflow names")
        elif value not in options:
            problems.append(f"{where}: {name}={value!r} not one of {options}")
    elif kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind == "INT" and not float(value).is_integer()):
            problems.append(f"{where}: {name}={value!r} is not a {kind}")
        else:
            lo, hi = opts.get("min", -math.inf), opts.get("max", math.inf)
            if not lo <= value <= hi:
                problems.append(f"{where}: {name}={value} outside [{lo}, {hi}]")
            step = opts.get("step")
            if kind == "INT" and step and step > 1 and (value - (lo if lo != -math.inf else 0)) % step:
                # the frontend snaps INT widgets to min + k·step when the value is edited
                problems.append(f"{where}: {name}={value} is off the widget's grid {lo} + k·{step}")
    elif kind == "STRING":
        if not isinstance(value, str):
            problems.append(f"{where}: {name}={value!r} is not a string")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            problems.append(f"{where}: {name}={value!r} is not a boolean")
    return problems


def promised_files(name: str) -> set[str]:
    wf = eg.WORKFLOWS[name]
    return {f for files in wf.files.values() for f in files} | set(wf.images)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the frontend's "Queue" / "Export (API)" sends for a UI workflow (graphToPrompt): one entry
    per executable node, widget values by name (the control_after_generate entries dropped), linked
    inputs as [source id, source slot]."""
    links = {row[0]: row for row in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in eg.FRONTEND_ONLY or node.get("mode", 0) in (2, 4):  # 2 muted, 4 bypassed
            continue
        schema = object_info[node["type"]]
        values = iter(node.get("widgets_values") or [])
        inputs = {}
        for name, _kind, opts in widgets(schema):
            inputs[name] = next(values)
            if opts.get("control_after_generate"):
                next(values)
        # an upload button's value follows (never serialized into the prompt)
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None:
                row = links[slot["link"]]
                inputs[slot["name"]] = [str(row[1]), row[2]]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title") or schema["display_name"]}}
    return prompt


# -------------------------------------------------------------------------------------------------
# Frontend workflow schema: a port of zComfyWorkflow (schema version 0.4) of ComfyUI_frontend 1.32.9


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return _is_num(x) and float(x).is_integer()


def _node_id(x) -> bool:
    return _is_int(x) or isinstance(x, str)


def _vec2(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(_is_num(v) for v in x)


def frontend_schema_problems(ui: dict) -> list[str]:
    p = []

    def need(cond: bool, what: str) -> None:
        if not cond:
            p.append(what)

    need(isinstance(ui, dict), "workflow is not an object")
    need(_node_id(ui.get("last_node_id")), "last_node_id")
    need(_is_num(ui.get("last_link_id")), "last_link_id")
    need(_is_num(ui.get("version")), "version")
    need(ui.get("version") == 0.4, "version is not 0.4 (the LiteGraph links-as-arrays schema)")
    if "id" in ui:
        import uuid

        try:
            uuid.UUID(ui["id"])
        except (ValueError, TypeError, AttributeError):
            p.append("id is not a uuid")
    need(ui.get("config") is None or isinstance(ui.get("config"), dict), "config")
    extra = ui.get("extra")
    need(extra is None or isinstance(extra, dict), "extra")
    if isinstance(extra, dict) and "ds" in extra:
        need(_is_num(extra["ds"].get("scale")) and _vec2(extra["ds"].get("offset")), "extra.ds")
    for g in ui.get("groups", []):
        need(isinstance(g.get("title"), str), "group title")
        need(isinstance(g.get("bounding"), list) and len(g["bounding"]) == 4
             and all(_is_num(v) for v in g["bounding"]), f"group {g.get('title')} bounding")
    for row in ui.get("links", []):
        need(isinstance(row, list) and len(row) == 6 and _is_num(row[0]) and _node_id(row[1]) and _is_int(row[2])
             and _node_id(row[3]) and _is_int(row[4]) and isinstance(row[5], (str, list, int)), f"link {row}")
    for n in ui.get("nodes", []):
        w = f"node {n.get('id')}"
        need(_node_id(n.get("id")), f"{w} id")
        need(isinstance(n.get("type"), str), f"{w} type")
        need(_vec2(n.get("pos")) and _vec2(n.get("size")), f"{w} pos/size")
        need(isinstance(n.get("flags"), dict), f"{w} flags")
        need(_is_num(n.get("order")) and _is_num(n.get("mode")), f"{w} order/mode")
        props = n.get("properties")
        need(isinstance(props, dict), f"{w} properties")
        if isinstance(props, dict):
            for key in ("Node name for S&R", "cnr_id", "ver"):
                need(key not in props or isinstance(props[key], str), f"{w} properties.{key}")
            for m in props.get("models", []):
                need(all(isinstance(m.get(k), str) for k in ("name", "url", "directory"))
                     and m["url"].startswith("https://"), f"{w} properties.models {m}")
        for i in n.get("inputs", []):
            need(isinstance(i.get("name"), str) and "type" in i and (i.get("link") is None or _is_num(i["link"])),
                 f"{w} input {i}")
        for o in n.get("outputs", []):
            need(isinstance(o.get("name"), str) and "type" in o
                 and (o.get("links") is None or all(_is_num(x) for x in o["links"])), f"{w} output {o}")
        need(isinstance(n.get("widgets_values", []), (list, dict)), f"{w} widgets_values")
        for key in ("color", "bgcolor", "title"):
            need(key not in n or isinstance(n[key], str), f"{w} {key}")
    return p


# -------------------------------------------------------------------------------------------------
# Files


def test_example_files_are_the_eleven_workflows():
    ui_files = sorted(p.stem for p in eg.UI_DIR.glob("*.json"))
    api_files = sorted(p.stem for p in eg.API_DIR.glob("*.json"))
    assert ui_files == NAMES == api_files
    assert set(NAMES) == {"causvid_1.3b_t2v", "causvid_14b_lightx2v_3_fragments",
                          "causvid_long_video_prompt_per_fragment", "causvid_one_minute_three_prompts",
                          "causvid_image_to_video", "causvid_stream_ten_minutes", "causvid_krea_realtime_14b_stream",
                          "causvid_reward_forcing_stream", "causvid_live_stream", "causvid_longlive2_720p_multishot",
                          "causvid_14b_multi_gpu"}


def test_readme_names_every_file_the_workflows_load_and_run_example_takes_both_names(tmp_path):
    """The README's table is the workflows' own files (a loader widget in any API twin names one of them), and
    the main command accepts each under the name in the table's 'published as' column."""
    import importlib.util

    from tools.comfy_server import REPO_ROOT
    from tools.workflows.files import readme_files_table

    table = readme_files_table(eg.WORKFLOWS)
    assert table in (REPO_ROOT / "README.md").read_text(), "README.md's file table is out of date:\n" + table
    for name in NAMES:
        api, files = eg.load_api(name), eg.WORKFLOWS[name].files
        named = {(folder, n["inputs"][widget]) for n in api.values()
                 for (kind, widget), folder in eg.FILE_WIDGETS.items() if n["class_type"] == kind and folder != "input"}
        assert named == {(folder, f) for folder, fs in files.items() for f in fs}, name
        assert all(f"| `{f}` | `{folder}/` |" in table for folder, f in named), name
    spec = importlib.util.spec_from_file_location("run_example", REPO_ROOT / "scripts" / "run_example.py")
    run_example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_example)
    for name in NAMES:
        models = tmp_path / name
        for folder, fs in eg.WORKFLOWS[name].files.items():
            (models / folder).mkdir(parents=True)
            for f in fs:
                (models / folder / eg.PUBLISHED.get(f, (f,))[0]).write_bytes(b"x")
        found, missing = run_example.find_files(models, eg.WORKFLOWS[name])
        assert not missing, (name, missing)


def test_files_are_generated_and_current(object_info):
    """Hand edits get lost: change the spec in tools/workflows/examples.py and regenerate."""
    for path, text in eg.generated_files(object_info).items():
        assert path.read_text() == text, f"{path} is out of date: run .venv/bin/python -m tools.workflows"


# -------------------------------------------------------------------------------------------------
# UI workflows


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_loads_in_the_frontend_schema(name):
    ui = eg.load_ui(name)
    assert frontend_schema_problems(ui) == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_graph_is_consistent(name):
    ui = eg.load_ui(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]), "duplicate node ids"
    assert ui["last_node_id"] >= max(nodes)
    link_ids = [row[0] for row in ui["links"]]
    assert len(set(link_ids)) == len(link_ids), "duplicate link ids"
    assert ui["last_link_id"] >= max(link_ids)
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"], (link_id, out)
        assert inp["link"] == link_id, (link_id, inp)
        assert out["type"] == inp["type"] == kind, (link_id, out["type"], inp["type"], kind)
        assert nodes[src]["order"] < nodes[dst]["order"], f"link {link_id}: order is not topological"
    for n in ui["nodes"]:  # every slot's link is in the table
        for i in n["inputs"]:
            assert i["link"] is None or i["link"] in link_ids
        for o in n["outputs"]:
            assert set(o["links"] or []) <= set(link_ids)
    assert sorted(n["order"] for n in ui["nodes"]) == list(range(len(ui["nodes"])))
    assert all(n["mode"] == 0 for n in ui["nodes"])
    for g in ui["groups"]:  # every node of a group lies inside it (the editor moves them together)
        x, y, w, h = g["bounding"]
        inside = [n for n in ui["nodes"] if x <= n["pos"][0] and n["pos"][0] + n["size"][0] <= x + w
                  and y <= n["pos"][1] and n["pos"][1] + n["size"][1] <= y + h]
        assert inside, f"group {g['title']} is empty"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_object_info(name, object_info):
    ui = eg.load_ui(name)
    promised = promised_files(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    problems = []
    for n in ui["nodes"]:
        where = f"{name} node {n['id']} ({n['type']})"
        if n["type"] in eg.FRONTEND_ONLY:
            continue
        if n["type"] not in object_info:
            problems.append(f"{where}: unknown node type")
            continue
        schema = object_info[n["type"]]
        assert n["properties"].get("Node name for S&R") == n["type"], where
        # widgets_values: one per widget, plus the control_after_generate entry after a seed
        expected = []
        for wname, kind, opts in widgets(schema):
            expected.append((wname, kind, opts))
            if opts.get("control_after_generate"):
                expected.append((wname + ".control", "CONTROL", {}))
        if any(opts.get("image_upload") for _, _, opts in widgets(schema)):
            # the frontend's upload button (Comfy.UploadImage) after the widgets; the editor saves its value
            expected.append(("upload", "UPLOAD", {}))
        values = n.get("widgets_values", [])
        if len(values) != len(expected):
            problems.append(f"{where}: {len(values)} widgets_values for {len(expected)} widgets "
                            f"{[e[0] for e in expected]}")
            continue
        for (wname, kind, opts), value in zip(expected, values):
            if kind == "CONTROL":
                if value not in CONTROL_VALUES:
                    problems.append(f"{where}: {wname}={value!r}")
            elif kind == "UPLOAD":
                if value != "image":
                    problems.append(f"{where}: upload button value {value!r}, the editor writes 'image'")
            else:
                problems += check_widget_value(where, n["type"], wname, kind, opts, value, promised)
        # socket slots in schema order; widget inputs (frontend >= 1.16 style) must name a widget
        socket_list = [i for i in n["inputs"] if "widget" not in i]
        want = sockets(schema)
        if [(i["name"], i["type"]) for i in socket_list] != [(s, k) for s, k, _ in want]:
            problems.append(f"{where}: input slots {[(i['name'], i['type']) for i in socket_list]} != {want}")
        widget_names = {w[0] for w in widgets(schema)}
        for i in n["inputs"]:
            if "widget" in i and i["widget"].get("name") not in widget_names:
                problems.append(f"{where}: widget input {i} names no widget")
        for s, _kind, optional in want:
            slot = next((i for i in socket_list if i["name"] == s), None)
            if not optional and (slot is None or slot.get("link") is None):
                problems.append(f"{where}: required input '{s}' is not connected")
        if [o["type"] for o in n["outputs"]] != schema["output"]:
            problems.append(f"{where}: outputs {[o['type'] for o in n['outputs']]} != {schema['output']}")
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        src_schema, dst_schema = object_info[nodes[src]["type"]], object_info[nodes[dst]["type"]]
        dst_name = nodes[dst]["inputs"][dst_slot]["name"]
        dst_kind = next(k for s, k, _ in sockets(dst_schema) if s == dst_name)
        if src_schema["output"][src_slot] != kind or dst_kind not in (kind, "*"):
            problems.append(f"{name} link {link_id}: {src_schema['output'][src_slot]} -> {dst_name} ({dst_kind})")
    assert problems == []


# -------------------------------------------------------------------------------------------------
# API twins


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_object_info(name, object_info):
    api = eg.load_api(name)
    promised = promised_files(name)
    problems = []
    for nid, node in api.items():
        where = f"{name} API node {nid} ({node['class_type']})"
        if node["class_type"] not in object_info:
            problems.append(f"{where}: unknown node type")
            continue
        schema = object_info[node["class_type"]]
        known = {n: (k, o, opt) for n, k, o, opt in schema_inputs(schema)}
        for iname in node["inputs"]:
            if iname not in known:
                problems.append(f"{where}: unknown input '{iname}'")
        for iname, (kind, opts, optional) in known.items():
            value = node["inputs"].get(iname)
            if value is None:
                if not optional:
                    problems.append(f"{where}: required input '{iname}' missing")
                continue
            if isinstance(value, list):  # a link [source id, output slot]
                src, slot = value
                if src not in api:
                    problems.append(f"{where}: {iname} links to missing node {src}")
                    continue
                out_types = object_info[api[src]["class_type"]]["output"]
                if not 0 <= slot < len(out_types) or out_types[slot] != kind:
                    problems.append(f"{where}: {iname} ({kind}) linked to {src}:{slot} "
                                    f"({out_types[slot] if 0 <= slot < len(out_types) else 'no such slot'})")
            elif is_widget(kind, opts):
                problems += check_widget_value(where, node["class_type"], iname, kind, opts, value, promised)
            else:
                problems.append(f"{where}: socket input '{iname}' has a value, not a link: {value!r}")
    assert problems == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twins_agree(name, object_info):
    ui, api = eg.load_ui(name), eg.load_api(name)
    converted = ui_to_api(ui, object_info)
    assert converted.keys() == api.keys()
    for nid in api:
        assert converted[nid] == api[nid], f"node {nid}:\nUI  {converted[nid]}\nAPI {api[nid]}"


# -------------------------------------------------------------------------------------------------
# What each workflow promises


def _one(api: dict, class_type: str) -> tuple[str, dict]:
    ids = eg.find_nodes(api, class_type)
    assert len(ids) == 1, f"expected one {class_type}, found {ids}"
    return ids[0], api[ids[0]]["inputs"]


def _sink_sampler(api: dict, kind: str, seconds: float) -> tuple[str, dict]:
    """The one sampling node (of `kind`) of a video in seconds on Self-Forcing with LongLive's sink cache (the
    first 3 latent frames and the 9 most recent), from the text alone: (its id, its inputs)."""
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == eg.SELF_FORCING_13B == "self_forcing_dmd.pt"
    sid, s = _one(api, kind)
    assert (s["width"], s["height"], s["seconds"], s["num_fragments"]) == (832, 480, seconds, 1)
    assert (s["cache"], s["window"], s["sink_frames"]) == ("sink", 12, 3)
    assert "start_latent" not in s and "state" not in s
    return sid, s


def _timeline(api: dict, sampler: dict) -> list[float]:
    """The times of the prompt timeline a sampler follows: one `seconds: prompt` line per prompt, each a real
    description, in its CausVid Text Encode."""
    text = api[sampler["positive"][0]]
    assert text["class_type"] == "CausVidTextEncode"
    lines = [line for line in text["inputs"]["text"].splitlines() if line.strip()]
    assert all(len(line.split(":", 1)[1].strip()) > 40 for line in lines), lines
    return [float(line.split(":", 1)[0]) for line in lines]


def _note(ui: dict) -> str:
    notes = [n for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1
    return notes[0]["widgets_values"][0]


@pytest.mark.parametrize("name", NAMES)
def test_common_parts(name):
    api, ui = eg.load_api(name), eg.load_ui(name)
    _, clip = _one(api, "CLIPLoader")
    assert clip["type"] == "wan" and clip["clip_name"] == "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    vae_id, vae = _one(api, "VAELoader")
    # the Wan 2.2 VAE for LongLive 2.0's 48-channel latents, the Wan 2.1 VAE for every other family
    wan22 = any(eg.fps_of(api, nid) == 24 for nid in eg.sampler_nodes(api))
    assert vae["vae_name"] == ("wan2.2_vae.safetensors" if wan22 else "wan_2.1_vae.safetensors")
    loader_id, loader = _one(api, "CausVidModelLoader")
    if eg.find_nodes(api, "CausVidStreamToVideo"):  # it decodes and saves the video itself
        _, stream = _one(api, "CausVidStreamToVideo")
        assert stream["vae"] == [vae_id, 0] and stream["model"] == [loader_id, 0]
        for kind in ("VAEDecode", "CreateVideo", "SaveVideo", "CausVidSampler"):
            assert not eg.find_nodes(api, kind), kind
    else:
        decode_id, decode = _one(api, "VAEDecode")
        assert decode["vae"][0] == vae_id
        create_id, create = _one(api, "CreateVideo")
        assert create["fps"] == 16 and create["images"] == [decode_id, 0]
        _, save = _one(api, "SaveVideo")
        assert save["video"] == [create_id, 0]
    note = _note(ui)
    for folder, files in eg.WORKFLOWS[name].files.items():
        for f in files:
            assert f in note and f"models/{folder}/" in note, (folder, f)
    for image in eg.WORKFLOWS[name].images:
        assert image in note and "ComfyUI/input/" in note, image
    assert loader["ckpt_name"] in eg.WORKFLOWS[name].files["diffusion_models"]
    assert "never downloads" in note
    model = [loader_id, 0]
    for multi_id, multi in ((i, api[i]["inputs"]) for i in eg.find_nodes(api, "CausVidMultiGPU")):
        assert multi["model"] == model  # the loader's MODEL, marked for several GPUs
        model = [multi_id, 0]
    for sampler in eg.find_nodes(api, "CausVidSampler"):
        assert api[sampler]["inputs"]["model"] == model
    for encode in eg.find_nodes(api, "VAEEncode"):  # a start image is encoded with the same Wan VAE
        assert api[encode]["inputs"]["vae"] == [eg.find_nodes(api, "VAELoader")[0], 0]


def test_causvid_13b_t2v_settings():
    api = eg.load_api("causvid_1.3b_t2v")
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == "causvid_1.3b_autoregressive.pt"
    sid, s = _one(api, "CausVidSampler")
    assert (s["width"], s["height"], s["length"], s["preset"], s["num_fragments"]) == (832, 480, 81, "CausVid 1.3B", 1)
    assert api[s["positive"][0]]["class_type"] == "CausVidTextEncode"
    decode_id, decode = _one(api, "VAEDecode")
    assert decode["samples"] == [sid, 0]
    assert eg.decoded_frames(api, decode_id) == 81


def test_lightx2v_14b_three_fragments():
    api, ui = eg.load_api("causvid_14b_lightx2v_3_fragments"), eg.load_ui("causvid_14b_lightx2v_3_fragments")
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == "lightx2v_causvid_14b.safetensors"
    sid, s = _one(api, "CausVidSampler")
    assert (s["width"], s["height"], s["length"], s["num_fragments"]) == (832, 480, 81, 3)
    assert s["preset"] == "CausVid-Plus 14B"
    assert eg.latent_frames_of(api, sid) == 57
    decode_id, _ = _one(api, "VAEDecode")
    assert eg.decoded_frames(api, decode_id) == 225
    note = _note(ui)
    assert "LightX2V CausVid 14B" in note and "causal_model.safetensors" in note


def test_long_video_prompt_per_fragment():
    api = eg.load_api("causvid_long_video_prompt_per_fragment")
    sid, s = _one(api, "CausVidSampler")
    text_node = api[s["positive"][0]]
    assert text_node["class_type"] == "CausVidTextEncode"
    lines = [line for line in text_node["inputs"]["text"].splitlines() if line.strip()]
    assert len(lines) >= 2 and s["num_fragments"] == len(lines)
    cid, c = _one(api, "CausVidContinue")
    assert c["state"] == [sid, 1] and c["model"] == s["model"]
    more = api[c["positive"][0]]
    assert more["class_type"] in ("CausVidTextEncode", "CLIPTextEncode") and c["positive"][0] != s["positive"][0]
    decode_id, decode = _one(api, "VAEDecode")
    assert decode["samples"] == [cid, 1], "decode the Continue node's whole `video` once (no seams)"
    assert eg.latent_frames_of(api, cid, 1) == eg.latent_frames_of(api, sid) + 18 * c["num_fragments"]


def test_one_minute_three_prompts():
    name = "causvid_one_minute_three_prompts"
    api, ui = eg.load_api(name), eg.load_ui(name)
    sid, s = _sink_sampler(api, "CausVidSampler", 60.0)
    assert s["preset"] in ("Self-Forcing / LongLive 1.3B", "LongLive 1.3B")
    assert _timeline(api, s) == [0, 20, 40]
    # 60 s at 16 fps = 960 frames -> 241 latent frames -> 81 whole blocks = 243 latent frames = 969 frames
    assert eg.latent_frames_of(api, sid) == 243
    decode_id, decode = _one(api, "VAEDecode")
    assert decode["samples"] == [sid, 0]
    assert eg.decoded_frames(api, decode_id) == 969 >= 60 * 16
    note = _note(ui)
    for words in ("gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt", "generator_ema", "seconds 60", "969",
                  "sink", "window 12", "constant", "re-cache", "LongLive"):
        assert words in note, words


def test_stream_ten_minutes():
    name = "causvid_stream_ten_minutes"
    api, ui = eg.load_api(name), eg.load_ui(name)
    sid, s = _sink_sampler(api, "CausVidStreamToVideo", 600.0)
    assert s["preset"] == "Self-Forcing / LongLive 1.3B"
    assert s["filename_prefix"] == "video/causvid_stream"
    assert s["vae"] == [eg.find_nodes(api, "VAELoader")[0], 0]
    assert _timeline(api, s) == [0, 150, 300, 450]
    # 600 s at 16 fps = 9600 frames -> 2401 latent frames -> 801 whole blocks = 2403 latent frames = 9609 frames
    assert eg.latent_frames_of(api, sid) == 2403
    assert eg.decoded_frames(api, sid) == 9609 >= 600 * 16
    # what CausVid Sampler + VAE Decode would hold in RAM: the float32 frames at 832 x 480
    assert round(9609 * 832 * 480 * 3 * 4 / 1e9) == 46
    note = _note(ui)
    for words in ("gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt", "generator_ema", "seconds 600",
                  "9609", "sink", "window 12", "constant", "Cancel", "playable", "ComfyUI/output/video/",
                  "46 GB", "VAE Decode"):
        assert words in note, words


def test_live_stream():
    """The live template: one first prompt, and the stream's live_clip is the prompt's own umT5."""
    name = "causvid_live_stream"
    api, ui = eg.load_api(name), eg.load_ui(name)
    sid, s = _sink_sampler(api, "CausVidStreamToVideo", 600.0)
    assert s["preset"] == "Self-Forcing / LongLive 1.3B" and s["filename_prefix"] == "video/causvid_live"
    text = api[s["positive"][0]]["inputs"]
    assert s["live_clip"] == text["clip"] == [eg.find_nodes(api, "CLIPLoader")[0], 0]
    assert ":" not in text["text"].split(",")[0]  # one prompt, not a timeline (a live run starts from one)
    note = _note(ui)
    for words in ("live panel", "next block", "live_clip", ".prompts.txt", "one prompt", "Cancel"):
        assert words in note, words


def test_reward_forcing_stream():
    """Reward Forcing's file under its published name, its preset with its own cache (the EMA sink), a minute in two
    prompts streamed to an mp4."""
    name = "causvid_reward_forcing_stream"
    api, ui = eg.load_api(name), eg.load_ui(name)
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == eg.REWARD_FORCING_13B == "rewardforcing.pt"
    sid, s = _one(api, "CausVidStreamToVideo")
    assert (s["preset"], s["cache"], s["window"], s["sink_frames"], s["seconds"]) == \
        ("Reward Forcing 1.3B", "preset default", 0, -1, 60.0)
    assert s["vae"] == [eg.find_nodes(api, "VAELoader")[0], 0]
    assert _timeline(api, s) == [0, 30]
    assert eg.latent_frames_of(api, sid) == 243  # 60 s as in the one-minute example
    note = _note(ui)
    for words in ("JaydenLu666/Reward-Forcing-T2V-1.3B", "rewardforcing.pt", "Reward Forcing 1.3B", "sink",
                  "9-frame cache", "0.999", "slots", "seconds 60"):
        assert words in note, words


def test_one_minute_frame_count_agrees_with_the_sampler():
    """eg.frames_for_seconds (written out for the checks) equals the node's causal.prompts.frames_for_seconds, for
    3-frame blocks at 16 fps and LongLive 2.0's 8-frame blocks at 24."""
    from causal.prompts import frames_for_seconds

    for seconds in (0.25, 1, 2, 3, 4.5, 5, 20, 60, 61.3):
        for start in (0, 1, 3):
            assert eg.frames_for_seconds(seconds, start) == frames_for_seconds(seconds, start), (seconds, start)
            assert eg.frames_for_seconds(seconds, start, 8, 24) == frames_for_seconds(seconds, start, 8, 24)


def test_longlive2_720p_multishot():
    """LongLive 2.0's example: its file under the name the table gives (published as model_bf16.pt), the Wan 2.2
    VAE, 1280x704 with its own preset and cache, 10 s at 24 fps (64 latent frames, 8 blocks) in two shots, the
    second a scene cut, streamed to an mp4."""
    name = "causvid_longlive2_720p_multishot"
    api, ui = eg.load_api(name), eg.load_ui(name)
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == eg.LONGLIVE2_5B and eg.PUBLISHED[eg.LONGLIVE2_5B][0] == "model_bf16.pt"
    assert eg.PUBLISHED[eg.LONGLIVE2_5B][1].startswith("Efficient-Large-Model/LongLive-2.0-5B")
    vae_id, vae = _one(api, "VAELoader")
    assert vae["vae_name"] == eg.WAN22_VAE and eg.MODEL_LINKS[eg.WAN22_VAE]["url"].startswith(
        "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/")
    sid, s = _one(api, "CausVidStreamToVideo")
    assert (s["width"], s["height"], s["preset"], s["seconds"], s["cache"]) == \
        (1280, 704, "LongLive 2.0 5B", 10.0, "preset default")
    assert s["width"] % 32 == s["height"] % 32 == 0 and s["vae"] == [vae_id, 0]
    assert eg.fps_of(api, sid) == 24 and eg.block_of(api, sid) == 8
    assert eg.latent_frames_of(api, sid) == 64 and eg.decoded_frames(api, sid) == 253 >= 10 * 24
    assert (s["length"] - 29) % 32 == 0  # whole 8-frame blocks, so the widget passes validation
    lines = api[s["positive"][0]]["inputs"]["text"].splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["0", "5#"]
    assert all(len(line.split(":", 1)[1].strip()) > 40 for line in lines)
    note = _note(ui)
    for words in ("Efficient-Large-Model/LongLive-2.0-5B", "model_bf16.pt", "Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
                  "24 fps", "253 frames", "scene cut", "The scene transitions. ", "pinned", "multiples of 32",
                  "29 + 32k"):
        assert words in note, words


def test_image_to_video():
    name = "causvid_image_to_video"
    api, ui = eg.load_api(name), eg.load_ui(name)
    _, loader = _one(api, "CausVidModelLoader")
    assert loader["ckpt_name"] == eg.CAUSVID_13B
    sid, s = _one(api, "CausVidSampler")
    assert (s["width"], s["height"], s["length"], s["preset"], s["num_fragments"]) == (832, 480, 81, "CausVid 1.3B", 1)
    assert s["seconds"] == 0 and "state" not in s
    # LoadImage -> ImageScale (the sampler's size) -> VAEEncode -> start_latent
    encode_id, encode = _one(api, "VAEEncode")
    assert s["start_latent"] == [encode_id, 0]
    scale_id, scale = _one(api, "ImageScale")
    assert encode["pixels"] == [scale_id, 0]
    assert (scale["width"], scale["height"]) == (s["width"], s["height"]) and scale["crop"] == "center"
    load_id, load = _one(api, "LoadImage")
    assert scale["image"] == [load_id, 0] and load["image"] == eg.START_IMAGE
    assert eg.start_frames_of(api, s["start_latent"]) == 1
    # the image (1 latent frame) and the 6 whole blocks that fit in 21: 19 latent frames = 73 frames
    assert eg.latent_frames_of(api, sid) == 19
    decode_id, decode = _one(api, "VAEDecode")
    assert decode["samples"] == [sid, 0]
    assert eg.decoded_frames(api, decode_id) == 73
    note = _note(ui)
    assert "trained to start from a single image" in note and "varies" in note
    assert "73 frames" in note and "832" in note


# -------------------------------------------------------------------------------------------------
# The new examples end to end, on tiny stand-ins in the real ComfyUI


W, H = 64, 48


def run_and_check_video(server, prompt: dict, timeout: float = 300):
    """Run the prompt; the saved video must have the frames the settings promise, at W x H and 16 fps, and
    each sampler must report one progress step per denoising step of its blocks."""
    result = server.run(prompt, timeout=timeout)
    assert result.status == "success", result.describe() + "\n" + server.log_tail(3000)
    save_id, expected = eg.saved_video(prompt)
    (path,) = server.output_paths(result, node_id=save_id)
    frames, width, height, fps = video_info(path)
    assert (width, height, round(fps), frames) == (W, H, 16, expected)
    for sid in eg.sampler_nodes(prompt):
        mine = [p["value"] for p in result.of_type("progress") if p["node"] == sid]
        assert mine == list(range(1, eg.denoising_steps(prompt, sid) + 1)), (sid, mine)
    return result, frames


@pytest.mark.parametrize("window", [None, 6])
def test_one_minute_workflow_runs_shortened(comfy_server, standins, window):
    """The one-minute graph as it is, at 3 s instead of 60 (the timeline scaled to 0 / 1 / 2 s): 48 frames
    -> 13 latent frames -> 5 blocks = 15 latent frames = 57 frames. That passes the workflow's 12-frame
    window (sink 3), and with window 6 it evicts at every block; both prompt changes re-cache."""
    name = "causvid_one_minute_three_prompts"
    prompt = eg.standin_prompt(eg.load_api(name), width=W, height=H, length=21, seconds=3.0)
    assert not eg.find_nodes(prompt, "CLIPLoader")
    (sid,) = eg.find_nodes(prompt, "CausVidSampler")
    sampler = prompt[sid]["inputs"]
    if window is not None:
        sampler["window"] = window
    text = prompt[sampler["positive"][0]]["inputs"]["text"]
    assert [line.split(":", 1)[0] for line in text.splitlines()] == ["0", "1", "2"]
    assert [line.split(":", 1)[1] for line in text.splitlines()] == \
        [f" {p}" for _, p in eg.ONE_MINUTE_TIMELINE]
    assert eg.latent_frames_of(prompt, sid) == 15 > sampler["window"]
    _, frames = run_and_check_video(comfy_server, prompt)
    assert frames == 57


def test_image_to_video_workflow_runs(comfy_server, standins):
    """The image-to-video graph as it is (LoadImage of the stand-in PNG, ImageScale to the stand-in size,
    VAE Encode): length 33 = 9 latent frames: the image, then 2 blocks = 7 latent frames = 25 frames. The
    sampler's latent begins with the encoded image, unchanged."""
    import torch
    from safetensors.torch import load_file

    name = "causvid_image_to_video"
    assert (comfy_server.input_dir / eg.START_IMAGE).is_file()
    prompt = eg.standin_prompt(eg.load_api(name), width=W, height=H, length=33)
    (sid,) = eg.find_nodes(prompt, "CausVidSampler")
    (scale_id,) = eg.find_nodes(prompt, "ImageScale")
    assert (prompt[scale_id]["inputs"]["width"], prompt[scale_id]["inputs"]["height"]) == (W, H)
    encode_id = prompt[sid]["inputs"]["start_latent"][0]
    prompt["90"] = {"class_type": "SaveLatent", "inputs": {"samples": [encode_id, 0], "filename_prefix": "wf/start"}}
    prompt["91"] = {"class_type": "SaveLatent", "inputs": {"samples": [sid, 0], "filename_prefix": "wf/i2v"}}
    assert eg.latent_frames_of(prompt, sid) == 7
    result, frames = run_and_check_video(comfy_server, prompt)
    assert frames == 25

    def latent(node_id: str) -> torch.Tensor:
        (path,) = comfy_server.output_paths(result, node_id=node_id)
        return load_file(str(path))["latent_tensor"]

    start, video = latent("90"), latent("91")
    h, w = latent_size(H, W)
    assert start.shape == (1, 16, 1, h, w) and video.shape == (1, 16, 7, h, w)
    assert torch.equal(video[:, :, :1], start)


# -------------------------------------------------------------------------------------------------
# ComfyUI lists them


def test_templates_listed_and_served(comfy_server):
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed.get(MAIN_PACK_NAME, [])) == NAMES, listed
    for name in NAMES:  # where the frontend fetches a template from
        served = comfy_server.get(f"/api/workflow_templates/{MAIN_PACK_NAME}/{name}.json")
        if isinstance(served, bytes):
            served = json.loads(served)
        assert served == eg.load_ui(name)
