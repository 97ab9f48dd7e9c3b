"""The CLIP BPE tokenizer of SD1, rebuilt from the vocabulary file that open_clip ships.

Single-file checkpoints carry no tokenizer, and tests must not download one; open_clip's
``bpe_simple_vocab_16e6.txt.gz`` holds the same merges, from which the vocabulary follows (byte
symbols, their word-final forms, one entry per merge, then the two special tokens), so the ids
equal those of ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path

N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_tokenizer_files(folder: str | os.PathLike, pad: str = EOS) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs of the CLIP tokenizer;
    ``pad`` is the padding token (SD1 pads with EOS, SD2's OpenCLIP with ``!``, id 0)."""
    from open_clip.tokenizer import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")[1:N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8")
    return folder


_FOLDERS: dict[str, tempfile.TemporaryDirectory] = {}


@functools.lru_cache(maxsize=2)
def tokenizer_folder(pad: str = EOS) -> Path:
    """A per-process folder holding the tokenizer files (written once, removed at exit)."""
    tmp = _FOLDERS[pad] = tempfile.TemporaryDirectory(prefix="mrgd-clip-tokenizer-")
    return write_tokenizer_files(tmp.name, pad)


def clip_tokenizer(pad: str = EOS):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tokenizer_folder(pad)))
