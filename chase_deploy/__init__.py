"""chase-deploy: Chase sparse training turned into physically smaller, faster networks."""

__version__ = "0.1.0"
