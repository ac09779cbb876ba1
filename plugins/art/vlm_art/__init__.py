"""vlm art plugin: paintings in procedural styles from a conditional GAN, style transfer, and
the procedural art-style data set the default weights were trained on."""

__version__ = "0.1.0"
