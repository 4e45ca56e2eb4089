"""Where the client finds its API URL and key: arguments, the environment, else the CLI's profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Tuple

from ._errors import ConfigError

__all__ = ["profiles_path", "resolve_credentials"]


def profiles_path() -> Path:
    """The CLI's profiles file: ``$XDG_CONFIG_HOME/boxyard/profiles.json`` (default ``~/.config/boxyard/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if base:
        root = Path(base)
    else:
        home = os.environ.get("HOME")
        root = Path(home) / ".config" if home else Path("/tmp")
    return root / "boxyard" / "profiles.json"


def _load_profile(name: Optional[str]) -> Optional[Tuple[str, str]]:
    """The (url, key) of profile ``name`` (None: the default one), or None if there is no such profile file."""
    path = profiles_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if name is not None:
            raise ConfigError(f"no profile named {name!r}: {path} does not exist") from None
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); fix or delete it") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a profiles file")
    profiles = doc.get("profiles") or {}
    chosen = name if name is not None else doc.get("default")
    if chosen is None:
        return None
    p = profiles.get(chosen) if isinstance(profiles, dict) else None
    if not isinstance(p, dict) or not isinstance(p.get("url"), str) or not isinstance(p.get("key"), str):
        raise ConfigError(f"no profile named {chosen!r} in {path}")
    return p["url"], p["key"]


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve_credentials(url: Optional[str], api_key: Optional[str], profile: Optional[str] = None) -> Tuple[str, str]:
    """The API URL and key to use.

    Order: the arguments; then ``BOXYARD_URL`` and ``BOXYARD_KEY``; then the profile named ``profile`` (or
    ``BOXYARD_PROFILE``), else the profiles file's default profile. A profile's key is only combined with a URL given
    elsewhere when it is the profile's own URL (a key is never sent to another server than its profile's).
    """
    url = url or os.environ.get("BOXYARD_URL") or None
    api_key = api_key or os.environ.get("BOXYARD_KEY") or None
    if url and api_key:
        return url.rstrip("/"), api_key
    prof = _load_profile(profile or os.environ.get("BOXYARD_PROFILE") or None)
    if prof is not None:
        p_url, p_key = prof
        if url is None and api_key is None:
            url, api_key = p_url, p_key
        elif url is None:
            url = p_url
        elif _same_url(url, p_url):
            api_key = p_key
    if not url or not api_key:
        missing = " and ".join(n for n, v in (("an API URL", url), ("an API key", api_key)) if not v)
        raise ConfigError(
            f"no Boxyard credentials: {missing} missing. Pass url= and api_key=, set BOXYARD_URL and BOXYARD_KEY, "
            f"or log in with the CLI (`boxyard login`, `boxyard dev up`), which writes {profiles_path()}"
        )
    return url.rstrip("/"), api_key
