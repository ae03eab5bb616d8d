"""Profiles: `book/profiles/<name>.yaml` says which notebooks a build runs, in order, with which papermill
parameters. Each notebook's parameters cell declares every parameter and its default; a profile lists only
what differs, and `profile` itself is injected by the build."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import PROFILES_DIR, BuildError


class ProfileError(BuildError, ValueError):
    """An unknown or malformed profile, or a notebook name the profile does not list."""

@dataclass(frozen=True)
class Profile:
    """One `book/profiles/<name>.yaml`: which notebooks a build runs, in order, and with which parameters."""

    name: str
    description: str
    banner: str
    notebooks: dict[str, dict[str, Any]]
    path: Path

    def parameters(self, stem: str) -> dict[str, Any]:
        """What papermill injects into notebook `stem`: `profile`, then the profile's entries for it."""
        return {"profile": self.name, **self.notebooks[stem]}

def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    """Names of the profiles in `profiles_dir` (default `book/profiles`), sorted."""
    return sorted(p.stem for p in Path(profiles_dir or PROFILES_DIR).glob("*.yaml"))

def load_profile(name: str, profiles_dir: Path | None = None) -> Profile:
    """Read and check profile `name`; raises ProfileError naming the available profiles if there is none."""
    profiles_dir = Path(profiles_dir or PROFILES_DIR)
    path = profiles_dir / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.is_file():
        names = ", ".join(available_profiles(profiles_dir)) or "none"
        raise ProfileError(f"unknown profile {name!r}; available profiles (in {profiles_dir}): {names}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a mapping with name, description, banner and notebooks")
    missing = [key for key in ("name", "description", "banner", "notebooks") if key not in data]
    if missing:
        raise ProfileError(f"profile {path} lacks the key(s) {', '.join(missing)}")
    if data["name"] != name:
        raise ProfileError(f"profile {path} says name: {data['name']!r}; it must match its file name {name!r}")
    raw = data["notebooks"] or {}
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path}: `notebooks` must map notebook stems to parameter mappings")
    notebooks: dict[str, dict[str, Any]] = {}
    for stem, params in raw.items():
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ProfileError(f"profile {path}: the parameters of {stem!r} must be a mapping, not {params!r}")
        if "profile" in params:
            # One source per parameter: `profile` always equals the profile being built.
            raise ProfileError(f"profile {path}: {stem!r} sets `profile`, which the build injects itself")
        notebooks[str(stem)] = dict(params)
    return Profile(name=name, description=str(data["description"]).strip(),
                   banner=str(data["banner"]).strip(), notebooks=notebooks, path=path)

def select(profile: Profile, only: Sequence[str] | None) -> list[str]:
    """The profile's stems, in its order, restricted to `only` (each of which it must list)."""
    if not only:
        return list(profile.notebooks)
    wanted = [s.strip().removesuffix(".ipynb") for item in only for s in item.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in profile.notebooks]
    if unknown:
        raise ProfileError(f"profile {profile.name!r} does not list {', '.join(unknown)}; "
                           f"it lists: {', '.join(profile.notebooks)}")
    return [s for s in profile.notebooks if s in wanted]
