"""Process settings, from the environment (prefix ``ZHAOPIAN_``) or arguments.

    ZHAOPIAN_DATA_DIR     where catalogs, indexes and uploads live   (~/.local/share/zhaopian)
    ZHAOPIAN_MEDIA_ROOT   only files inside it can be indexed by path (your home folder)
    ZHAOPIAN_TENANT       tenant used by the CLI                      (default)
    ZHAOPIAN_ENCODER      visual encoder of new libraries             (bundled)
                          e.g. chinese-clip:OFA-Sys/chinese-clip-vit-base-patch16
    ZHAOPIAN_THREADS      CPU threads for models, 0 = library default (0)
    ZHAOPIAN_ES_URL       Elasticsearch URL for libraries whose text index is elasticsearch
    ZHAOPIAN_LLM_URL      an OpenAI-compatible endpoint (…/v1) that rewrites queries; off when unset
    ZHAOPIAN_LLM_MODEL    its model name
    ZHAOPIAN_LLM_API_KEY  its key (never logged)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhaopian.modules.visual.encoders.base import EncoderConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHAOPIAN_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "zhaopian")
    media_root: Path = Field(default_factory=Path.home)
    tenant: str = "default"
    encoder: str = "bundled"
    threads: int = Field(default=0, ge=0, le=256)
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(default=5.0, gt=0, le=120)

    @field_validator("data_dir", "media_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("encoder")
    @classmethod
    def _encoder_spec(cls, value: str) -> str:
        EncoderConfig.parse_spec(value)
        return value

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def media_roots(self) -> list[Path]:
        """Files may be indexed from the media root and from the data directory's own media folder."""
        return [self.media_root, self.upload_dir]
