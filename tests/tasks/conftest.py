"""Fixtures of the long-context task tests: the shipped evaluation text, a tiny BPE
tokenizer trained on it, the default model's real tokenizer when it is cached, and tiny
random Llama models whose vocabulary is the tiny tokenizer's."""

from pathlib import Path

import pytest

REAL_TOKENIZER = Path.home() / ".cache" / "sparsebench" / "models" / "smollm2-135m" / "converted"


@pytest.fixture(scope="session")
def eval_text() -> str:
    from sparsebench.data import resolve_corpus

    return resolve_corpus("default").load().evaluation


@pytest.fixture(scope="session")
def tiny_tok(eval_text):
    """A 400-token byte-level BPE trained on a slice of the evaluation text (in a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([eval_text[:20_000]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


@pytest.fixture(scope="session")
def real_tok():
    """The default model's tokenizer (SmolLM2), when its converted copy is cached."""
    if not (REAL_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip("the default model's tokenizer is not cached (run any task on --model llama once)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(REAL_TOKENIZER)


@pytest.fixture(scope="session")
def any_tok(request):
    """The real tokenizer if cached, else the tiny one: length checks hold for both."""
    if (REAL_TOKENIZER / "tokenizer.json").is_file():
        return request.getfixturevalue("real_tok")
    return request.getfixturevalue("tiny_tok")


@pytest.fixture(scope="session")
def make_model(tiny_tok):
    """``make_model(max_positions)``: a one-layer random LlamaForCausalLM (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(max_positions: int = 1024):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tiny_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                          eos_token_id=tiny_tok.eos_token_id, pad_token_id=tiny_tok.eos_token_id)
        return LlamaForCausalLM(cfg).eval()

    return make


@pytest.fixture
def ctx(eval_text, tiny_tok):
    from sparsebench.api import EvalContext

    seen = []

    def progress(iterable, desc="", total=None, **_):
        seen.append((desc, total))
        yield from iterable

    c = EvalContext(text=eval_text, tokenizer=tiny_tok, progress=progress)
    c.seen = seen
    return c
