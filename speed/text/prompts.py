"""Prompts to draw for a text-to-image model: a list, or a text file with one per line."""

from __future__ import annotations

from pathlib import Path

from speed.errors import ConfigError


def load_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str] | None:
    """The non-blank lines of `prompts_file` (stripped) when it is set (so a file given on the
    command line replaces a config's prompts), else `prompts`, else None."""
    if not prompts_file:
        if not prompts:
            return None
        texts = [str(p).strip() for p in prompts]
        if not all(texts):
            raise ConfigError(f"prompts: every prompt must be a non-empty string, got {prompts}")
        return texts
    path = Path(prompts_file)
    if not path.is_file():
        raise ConfigError(f"prompts_file={prompts_file}: no such file (one prompt per line)")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ConfigError(f"prompts_file={prompts_file} holds no prompt (one per line)")
    return texts


def request_prompt(value, max_chars: int, field: str = "prompt") -> str:
    """A prompt sent to a server: a non-blank string of at most `max_chars` characters, stripped
    (as `load_prompts` strips the lines of a file); else a ConfigError naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{field}: every prompt must be a non-empty string, got {value!r}")
    text = value.strip()
    if len(text) > max_chars:
        raise ConfigError(
            f"{field}: a prompt of {len(text)} characters is over this server's limit of "
            f"{max_chars} (--max-prompt-chars)"
        )
    return text
