from causal.text import clean_prompt, split_prompts


def test_clean_prompt_matches_the_reference_recipe():
    assert clean_prompt("  A  cat&amp;amp;dog\n\t runs  ") == "A cat&dog runs"
    assert clean_prompt("caf\u00c3\u00a9 at dawn") == "caf\u00e9 at dawn"  # ftfy repairs mojibake


def test_split_prompts_one_per_line():
    assert split_prompts("a red fox\n\n  a blue bird  \n") == ["a red fox", "a blue bird"]
    assert split_prompts("   \n") == []
