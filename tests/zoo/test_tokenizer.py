"""The word-level vocabulary covers every text the world produces."""

from edgecompile.world import CLASS_NAMES, class_prompt, generate
from edgecompile.zoo.llava_parts import CHAT_TEMPLATE, build_processor, prompt
from edgecompile.zoo.tokenizer import build_tokenizer, wrap


def test_no_unknown_words_in_world_texts():
    tok = wrap(build_tokenizer(with_image_token=False, add_bos_eos=True), model_max_length=16)
    texts = [class_prompt(c) for c in CLASS_NAMES]
    for s in generate("train", 100):
        texts += [s.caption, *(q for q, _ in s.qa), *(a for _, a in s.qa)]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert len(ids) <= 16


def test_chat_template_matches_training_prompt():
    processor = build_processor(16)
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "what shape is it?"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == prompt("what shape is it?")
    assert "<image>" in CHAT_TEMPLATE
