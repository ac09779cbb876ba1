"""vlm's caption plugin: visual customer service on the core's cross-modal engine.

Tasks: ``caption.describe`` (image → caption and tags), ``caption.answer`` (image + customer
message → reply from the support knowledge base, or a clarifying question) and
``caption.search`` (catalogue images for a text or an image). See the plugin's README.
"""

__version__ = "0.1.0"
