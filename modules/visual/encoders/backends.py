"""The built-in encoder backends: name -> where the class lives (imported only when chosen)."""

BACKENDS: dict[str, str] = {
    "bundled": "zhaopian.modules.visual.encoders.bundled:BundledEncoder",
    "chinese-clip": "zhaopian.modules.visual.encoders.chinese_clip:ChineseClipEncoder",
    "open-clip": "zhaopian.modules.visual.encoders.open_clip:OpenClipEncoder",
    "onnx": "zhaopian.modules.visual.encoders.onnx:OnnxClipEncoder",
}
