"""CausVid Text Encode: umT5 prompts prepared the reference way (docs/algorithm.md §6), one prompt per
fragment or a timeline."""

from __future__ import annotations

from comfy_api.latest import io

from ..causal.prompts import SCENE_CUT_PREFIX
from ..causal.text import TEXT_TOKENS, clean_prompt, split_timeline

FRAGMENT_KEY = "causvid_fragment"
"""CONDITIONING entries tagged with their index carry one prompt per fragment (or per timed line)."""
START_KEY = "causvid_start_seconds"
"""Timed lines (`seconds: prompt`) also carry when they start."""
CUT_KEY = "causvid_scene_cut"
"""On a timed line written `seconds#: prompt`: a scene cut at that switch (Infinity-RoPE's cache, LongLive 2.0's
shots)."""
OPENING_KEY = "causvid_shot_opening"
"""On a scene cut: the embedding of `causal.prompts.SCENE_CUT_PREFIX` and the prompt, which opens the shot where
the preset's cache has shots (LongLive 2.0, as its data prompts a new shot's first block); other presets read the
prompt alone."""
TEXT_KEY = "causvid_text"
"""The cleaned prompt text of the entry (a live stream writes it into the timeline it saves)."""


def _escape_weights(text: str) -> str:
    # ComfyUI reads "(word:1.2)" as prompt weighting; the references tokenise brackets literally
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _truncate(tokens: dict, end_token: int) -> dict:
    """Keep the first 511 tokens and the end token of each sequence, as the reference tokenizer does
    (ComfyUI pads to 512 but never cuts)."""
    out = {}
    for key, batches in tokens.items():
        cut = []
        for batch in batches:
            if len(batch) > TEXT_TOKENS:
                end = (end_token, 1.0, 0)[:len(batch[0])]  # (token, weight[, word id])
                batch = list(batch[:TEXT_TOKENS - 1]) + [end]
            cut.append(batch)
        out[key] = cut
    return out


class CausVidTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidTextEncode",
            display_name="CausVid Text Encode",
            category="CausVid",
            description="Encodes prompts with umT5 the way CausVid does: ftfy/HTML/whitespace cleaning, brackets "
                        "taken literally, at most 512 tokens. One prompt per line: line N drives fragment N "
                        "(the last line repeats for later fragments), or a timeline with one 'seconds: prompt' "
                        "per line (e.g. '0: a cat sleeps' then '20: the cat wakes up').",
            inputs=[
                io.Clip.Input("clip", tooltip="The umT5-XXL text encoder (CLIPLoader, type wan)."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="One prompt per line; each line is one fragment's prompt. Or a timeline: "
                                        "'0: first prompt', '12.5: second prompt', ... (seconds into the video); "
                                        "'12.5#: ...' marks a scene cut (the Infinity-RoPE preset; with "
                                        "LongLive 2.0 a new shot, whose first block reads 'The scene "
                                        "transitions. ' before the prompt, as LongLive 2.0 was trained)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="One entry per prompt, for CausVid Sampler.")],
        )

    @classmethod
    def execute(cls, clip, text: str) -> io.NodeOutput:
        if clip is None:
            raise RuntimeError("no text encoder: connect a CLIPLoader (type wan) with umt5_xxl")
        lines = [(line.start, clean_prompt(line.text), line.cut) for line in split_timeline(text)] or \
            [(None, "", False)]
        conditioning = []
        for index, (start, prompt, cut) in enumerate(lines):
            cond, encoded = encode_prompt(clip, prompt)
            tags = {FRAGMENT_KEY: index, TEXT_KEY: prompt}
            if start is not None:
                tags[START_KEY] = start
            if cut:
                tags[CUT_KEY] = True
                tags[OPENING_KEY] = encode_prompt(clip, clean_prompt(SCENE_CUT_PREFIX + prompt))[0]
            conditioning.append([cond, {**encoded, **tags}])
        return io.NodeOutput(conditioning)


def encode_prompt(clip, prompt: str) -> tuple:
    """One cleaned prompt through umT5 as the references tokenise it: (cond [1, tokens, 4096], the rest of
    ComfyUI's encode output)."""
    tokens = clip.tokenize(_escape_weights(prompt))
    tokenizer = getattr(clip.tokenizer, getattr(clip.tokenizer, "clip", ""), None)
    end_token = getattr(tokenizer, "end_token", 1)
    encoded = clip.encode_from_tokens(_truncate(tokens, end_token), return_dict=True)
    return encoded.pop("cond"), encoded
