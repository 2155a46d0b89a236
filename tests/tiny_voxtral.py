"""Build a tiny, randomly initialised Voxtral (model + processor) offline, for tests.

Model hubs are unreachable, so tests exercise the real transformers/mistral-common code
path on a ~0.4 M parameter model whose shapes follow Voxtral's rules (see
shared/notes/tiny-voxtral.md). Its output is gibberish: tests assert on the code path
(token counts, event shapes, info fields), never on text.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

# Byte tokens sit after the special tokens: token id = NUM_SPECIAL + byte value.
NUM_SPECIAL = 100
VOCAB_SIZE = NUM_SPECIAL + 256
EOS_ID = 2
PAD_ID = 11
AUDIO_TOKEN_ID = 24  # VoxtralProcessor hard-codes this id

_CONTROL = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]  # fmt: skip
_NAMED = {AUDIO_TOKEN_ID: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]"}

# tekken's usual pre-tokenizer pattern (words, numbers, punctuation, whitespace).
_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _tekken_json() -> dict:
    """A v7 tekken tokenizer (the first version with audio) over the 256 single bytes."""
    specials = []
    for rank in range(NUM_SPECIAL):
        name = _CONTROL[rank] if rank < len(_CONTROL) else _NAMED.get(rank, f"<SPECIAL_{rank}>")
        specials.append({"rank": rank, "token_str": name, "is_control": True})
    vocab = [
        {
            "rank": b,
            "token_bytes": base64.b64encode(bytes([b])).decode(),
            "token_str": chr(b) if 32 <= b < 127 else None,
        }
        for b in range(256)
    ]
    return {
        "config": {
            "pattern": _PATTERN,
            "num_vocab_tokens": 256,
            "default_vocab_size": VOCAB_SIZE,
            "default_num_special_tokens": NUM_SPECIAL,
            "version": "v7",
        },
        "vocab": vocab,
        "special_tokens": specials,
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "chunk_length_s": 30.0,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
        },
    }


def build_tiny_voxtral(directory: Path) -> Path:
    """Save a tiny random Voxtral and its processor into `directory` (one dir: see the note's gotcha)."""
    import torch
    from transformers import (
        GenerationConfig,
        VoxtralConfig,
        VoxtralForConditionalGeneration,
        VoxtralProcessor,
        WhisperFeatureExtractor,
    )
    from transformers.tokenization_mistral_common import MistralCommonBackend

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tekken = directory / "tekken.json"
    tekken.write_text(json.dumps(_tekken_json()))

    config = VoxtralConfig(
        # intermediate = 4 * hidden: the encoder output is reshaped by it into audio tokens.
        audio_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_mel_bins": 128, "max_source_positions": 1500},
        # Merged over the 3B defaults: head_dim and kv heads must be explicit.
        text_config={"vocab_size": VOCAB_SIZE, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 16, "max_position_embeddings": 4096,
                     "bos_token_id": 1, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID},
        audio_token_id=AUDIO_TOKEN_ID,
    )  # fmt: skip
    torch.manual_seed(0)
    model = VoxtralForConditionalGeneration(config).eval()
    # Random weights emit arbitrary bytes (invalid UTF-8 that TextIteratorStreamer holds back)
    # and may stop at once: allow only a-z and space so every run streams words to max_new_tokens.
    allowed = {NUM_SPECIAL + ord(c) for c in "abcdefghijklmnopqrstuvwxyz "}
    model.generation_config = GenerationConfig(
        bos_token_id=1,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        suppress_tokens=[i for i in range(VOCAB_SIZE) if i not in allowed],
    )
    model.save_pretrained(directory)

    processor = VoxtralProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=MistralCommonBackend(tokenizer_path=str(tekken)),
    )
    processor.save_pretrained(directory)
    return directory
