"""CausVid Text Encode: umT5 prompts prepared the reference way (§7.1), one prompt per fragment."""

from __future__ import annotations

from comfy_api.latest import io

from ..causal.text import TEXT_TOKENS, clean_prompt, split_prompts

FRAGMENT_KEY = "causvid_fragment"
"""CONDITIONING entries tagged with their fragment index carry one prompt per fragment."""


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
                        "(the last line repeats for later fragments).",
            inputs=[
                io.Clip.Input("clip", tooltip="The umT5-XXL text encoder (CLIPLoader, type wan)."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="One prompt per line; each line is one fragment's prompt."),
            ],
            outputs=[io.Conditioning.Output(tooltip="One entry per prompt, for CausVid Sampler.")],
        )

    @classmethod
    def execute(cls, clip, text: str) -> io.NodeOutput:
        if clip is None:
            raise RuntimeError("no text encoder: connect a CLIPLoader (type wan) with umt5_xxl")
        prompts = [clean_prompt(p) for p in split_prompts(text)] or [""]
        conditioning = []
        for index, prompt in enumerate(prompts):
            tokens = clip.tokenize(_escape_weights(prompt))
            tokenizer = getattr(clip.tokenizer, getattr(clip.tokenizer, "clip", ""), None)
            end_token = getattr(tokenizer, "end_token", 1)
            encoded = clip.encode_from_tokens(_truncate(tokens, end_token), return_dict=True)
            cond = encoded.pop("cond")
            conditioning.append([cond, {**encoded, FRAGMENT_KEY: index}])
        return io.NodeOutput(conditioning)
