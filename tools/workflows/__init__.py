"""The pack's example workflows, defined once, and the helpers that run them with tiny stand-ins.

Every example exists twice:

* ``example_workflows/<name>.json``: the UI workflow (LiteGraph JSON, what the ComfyUI editor opens and
  what *Workflow \u2192 Browse Templates* lists for this pack);
* ``tools/workflows/api/<name>.json``: its API-format twin (what ``POST /prompt`` takes), used by the
  tests and by ``scripts/run_example.py``. It lives outside ``example_workflows/`` because ComfyUI
  lists every ``*.json`` there as a template.

Both are generated from the specs in ``examples.py`` (``WORKFLOWS``) and the node schemas of a running
ComfyUI (``/object_info``: widget order, socket slots, display names)::

    .venv/bin/python -m tools.workflows           # (re)write both sets of files
    .venv/bin/python -m tools.workflows --check   # exit 1 if a file is out of date

``tests/test_workflows.py`` checks that the files are what this package generates, validates both
twins against ``/object_info`` and converts each UI workflow to API format the way the frontend does
and compares it with its twin, so a hand edit of either file is caught.

The modules: ``files`` (the model files), ``graph`` (specs to API and UI JSON), ``examples`` (the
workflows), ``frames`` (frame and step counts of a prompt), ``standins`` (running them on tiny stand-ins).
Their public names are re-exported here: ``from tools import workflows as eg; eg.load_api(name)``.
"""

from tools.workflows.examples import ONE_MINUTE_TIMELINE, TEN_MINUTES_TIMELINE, WORKFLOWS, generated_files
from tools.workflows.files import (CAUSVID_13B, FILE_WIDGETS, LIGHTX2V_14B, LONGLIVE2_5B, MODEL_LINKS, PUBLISHED,
                                   REWARD_FORCING_13B, SELF_FORCING_13B, START_IMAGE, UMT5, WAN22_VAE, WAN_VAE)
from tools.workflows.frames import (FPS, FRAMES_PER_BLOCK, SAMPLER_KINDS, SAMPLING_NODES, WAN22_FPS, block_of,
                                    decoded_frames, denoising_steps, find_nodes, fps_of, frames_for_seconds,
                                    latent_frames_of, new_latent_frames_of, preset_of, sampler_nodes, saved_fps,
                                    saved_video, start_frames_of)
from tools.workflows.graph import (API_DIR, FRONTEND_ONLY, UI_DIR, Node, Note, Slot, Workflow, build_api, build_ui,
                                   dumps, input_slots, load_api, load_ui, socket_slots, widget_slots)
from tools.workflows.standins import (STANDIN_LAYOUTS, standin_length, standin_prompt, standin_size,
                                      write_standin_models)

__all__ = [
    "API_DIR", "CAUSVID_13B", "FILE_WIDGETS", "FPS", "FRAMES_PER_BLOCK", "FRONTEND_ONLY", "LIGHTX2V_14B",
    "LONGLIVE2_5B", "MODEL_LINKS", "Node", "Note", "ONE_MINUTE_TIMELINE", "PUBLISHED", "REWARD_FORCING_13B",
    "SAMPLER_KINDS", "SAMPLING_NODES",
    "SELF_FORCING_13B", "STANDIN_LAYOUTS", "START_IMAGE", "Slot", "TEN_MINUTES_TIMELINE", "UI_DIR", "UMT5",
    "WAN22_FPS", "WAN22_VAE", "WAN_VAE", "WORKFLOWS", "Workflow", "block_of", "build_api", "build_ui",
    "decoded_frames", "denoising_steps", "dumps", "find_nodes", "fps_of", "frames_for_seconds", "generated_files",
    "input_slots", "latent_frames_of", "load_api", "load_ui", "new_latent_frames_of", "preset_of", "sampler_nodes",
    "saved_fps", "saved_video", "socket_slots", "standin_length", "standin_prompt", "standin_size", "start_frames_of",
    "widget_slots", "write_standin_models",
]
