"""On-device latency and parity harness (numpy, pillow and one runtime only).

`python -m featherface.bench BUNDLE_OR_FILE...` (or `featherface bench`): see cli.py.
Modules: stats (pure statistics and the interleaved schedule), targets (arguments ->
verified files), runner (timing, memory), records (the report as types, its JSON), parity
(golden vectors vs PyTorch), device (what ran it), report (text, JSON, Markdown, plot),
coreml (macOS compute units), export_golden (golden vectors for the Swift harness in
ios/), soak (memory over many frames). Importing this package imports nothing else.
"""
