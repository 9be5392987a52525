"""gen4gen: multi-concept personalisation data (Gen4Gen's MyCanvas pipeline) and a text-to-image benchmark."""
__version__ = "0.1.0"
