"""vlm plugin '{{name}}'."""
