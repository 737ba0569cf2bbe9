"""The layout of a token file: nanoGPT's raw uint16 ids, or llm.c's with a 1 KiB int32 header.

Read with the standard library only, so that the checks before launch stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mpcli.errors import ConfigError

# llm.c token files start with 256 int32 words: magic number, version (1 = uint16 ids), token count.
LLMC_MAGIC = 20240520
LLMC_HEADER_BYTES = 256 * 4
TOKEN_BYTES = 2  # uint16 ids


@dataclass(frozen=True)
class TokenFileLayout:
    offset: int  # bytes before the first token
    count: int  # tokens in the file


def _word(head: bytes, index: int) -> int:
    return int.from_bytes(head[4 * index : 4 * index + 4], "little", signed=True)


def token_file_layout(path: Path, key: str) -> TokenFileLayout:
    """Where the tokens of `path` start and how many there are; `ConfigError` (naming `key`) when the
    size does not fit uint16 ids or an llm.c header disagrees with the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) == 12 and _word(head, 0) == LLMC_MAGIC:
        version, count = _word(head, 1), _word(head, 2)
        if version != 1:
            raise ConfigError(
                f"{key}: llm.c token file version {version}; mpcli reads version 1 (uint16 ids)"
            )
        body = size - LLMC_HEADER_BYTES
        if count < 0 or body != count * TOKEN_BYTES:
            raise ConfigError(
                f"{key}: its llm.c header announces {count} tokens but {body} bytes follow it "
                f"(expected {count * TOKEN_BYTES}); the file is truncated or damaged"
            )
        return TokenFileLayout(LLMC_HEADER_BYTES, count)
    if size % TOKEN_BYTES:
        raise ConfigError(
            f"{key}: {size} bytes is not a whole number of uint16 tokens; the file is truncated or not "
            "a token file"
        )
    return TokenFileLayout(0, size // TOKEN_BYTES)
