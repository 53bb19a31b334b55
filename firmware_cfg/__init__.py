"""Terminal configuration, key files, signed config bundles and provisioning."""

from firmware_cfg.config import DEFAULT, Config, load

__all__ = ["DEFAULT", "Config", "load"]
