"""A trained denoiser outside PyTorch: its ONNX graph (`onnx_graph`), the inputs it takes beyond
x, t, y and the guidance scale (`conditions`: a caption, a control image, a low-res image), the
JSON manifest that describes it (`manifest`: schedule, parameterisation, shapes, classes,
guidance, those inputs, settings), and a sampler over an ONNX Runtime session that needs only
those two files (`onnx_sampling`).

The `export` phase (`speed.runners.export`) writes both files for a run's checkpoint.
"""
