"""Hardware profiles declared in YAML, and the fingerprint of the machine that ran."""

from .hardware import Profile, fingerprint, load_profiles, select_profile

__all__ = ["Profile", "fingerprint", "load_profiles", "select_profile"]
