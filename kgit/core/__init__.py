"""The bottom layer: what every other layer shares and that needs nothing but the standard library,
numpy and PyYAML: errors and their one-line wording, atomic file writing, the one bounded reader for
YAML/JSON/``.dvc`` input, progress lines, byte sizes as shown (``sizes``), where releases live and
what their files are called (``layout``), the release record (``metadata.json``) and metric values."""
