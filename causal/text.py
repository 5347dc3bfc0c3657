"""Prompt text preparation as the references do it before umT5 tokenisation (design §7.1):
ftfy's fix_text, HTML unescaped twice, outer whitespace stripped, runs of whitespace collapsed to one
space. Prompts longer than 512 tokens (end token included) are cut by the tokenizer's caller."""

from __future__ import annotations

import html
import re

import ftfy

TEXT_TOKENS = 512


def clean_prompt(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def split_prompts(text: str) -> list[str]:
    """One prompt per non-empty line (one per fragment)."""
    return [line.strip() for line in text.splitlines() if line.strip()]
