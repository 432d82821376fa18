"""Tokenising audio datasets: files -> Parquet shards of codes, and reading them back.

    from opencodec.tokens import TokenizeOptions, tokenize, TokenDataset
    tokenize(TokenizeOptions(inputs=["corpus/"], out=Path("tokens")))
    ds = TokenDataset("tokens")          # ds[i]["codes"]: LongTensor [K, F]

Modules: ``inputs`` (which files), ``plan`` (shards, ranks, batches), ``reader`` (decoding in
DataLoader workers), ``shards`` (Parquet files, resume, index), ``job`` (the run),
``dataset`` (reading back, detokenising).
"""

from .dataset import TokenDataset, collate_tokens, detokenize
from .inputs import InputError, InputItem, list_inputs
from .job import Summary, TokenizeOptions, tokenize
from .shards import TokenizeError

__all__ = ["TokenDataset", "collate_tokens", "detokenize", "InputError", "InputItem", "list_inputs",
           "Summary", "TokenizeOptions", "tokenize", "TokenizeError"]
