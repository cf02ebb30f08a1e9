"""Export a catalog model as a TF Serving SavedModel, with the PyTorch weights ported to Keras.

    python -m scripts.build.export_tf [--model NAME]      (normally run through scripts.build)

Contract
- `export(model)` writes `model.savedmodel_dir` (model_store/tf/<name>/<tf_version>/) atomically:
  the SavedModel is written into a hidden, non-numeric sibling folder (TF Serving only loads
  numeric folders, so it never sees a half-written version) and renamed into place.
- Signatures (k = the catalog's `topk`, fixed in the graph):
    serving_default  images: tf.string [N] encoded JPEG/PNG/GIF/BMP/WebP (REST: {"b64": "..."})
    pixels           pixels: float32 [N, size, size, 3], already preprocessed
  both return class_ids int32 [N, k], labels string [N, k], probabilities float32 [N, k]
  (softmax, best first) and error string [N]: "" for an answered instance, else a short message.
- Per-instance isolation: TF Serving's batching merges instances of several requests into one
  run, so nothing an instance contains may fail the run. A bad instance gets its message in
  `error` and zeros / "" in the other outputs; its neighbours are answered as if alone. Checked
  before any pixel is decoded: the format (magic bytes), and the size read from the header
  against the catalog's limits.max_image_pixels (the handler's limit, HTTP 413 there). A decoder
  that still fails (truncated or corrupt data) drops only its instance (tf.data ignore_errors).
  A GIF is cut after its first frame before decoding (TF's decoder reads every frame).
- Preprocessing in the graph is the catalog's `input` contract, identical to the TorchServe
  handler (handlers/images.py): RGB (gray expanded, alpha composited on white, first GIF frame,
  large JPEGs decoded at PIL's draft DCT scale), central square crop of side
  round(min(h, w) * crop_fraction), bilinear antialiased resize to size x size, (x - mean) / std.
  Not replicated: EXIF orientation, TIFF.
- `assets.extra/tf_serving_warmup_requests` holds one PredictionLog per signature.
- `sources()` lists the repo files the output depends on (for build.py's fingerprint).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch  # noqa: F401  (must be imported before tensorflow: the reverse order segfaults)

import numpy as np  # noqa: E402

from scripts import catalog  # noqa: E402
from scripts.catalog import ROOT, Model  # noqa: E402

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_PIXELS = "pixels"
OUTPUTS = ("class_ids", "labels", "probabilities", "error")
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# Signatures of the formats both tf.io.decode_image and the TorchServe handler (PIL) decode, as
# (offset, bytes) pairs that must all match; checked first so that a bad instance is reported
# with its index and the accepted formats instead of a decoder error.
MAGIC = (
    ((0, b"\xff\xd8\xff"),),  # JPEG
    ((0, b"\x89PNG\r\n\x1a\n"),),  # PNG
    ((0, b"GIF8"),),  # GIF87a / GIF89a
    ((0, b"BM"),),  # BMP
    ((0, b"RIFF"), (8, b"WEBP")),  # WebP
)
FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def sources() -> list[Path]:
    """Repo files whose content changes the exported SavedModel."""
    return [Path(__file__).resolve(), ROOT / "scripts" / "catalog.py"]


# --------------------------------------------------------------------------- network port


def torch_network(model: Model):
    """The reference PyTorch network of the catalog entry, with its verified weights, eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(model.architecture)
    state = torch.load(model.weights.verified(), weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    return net.eval()


def torch_pixels(rgb: np.ndarray, model: Model):
    """Reference preprocessing (HxWx3 uint8 RGB -> NCHW float32 [1, 3, size, size]): the
    TorchServe handler's own code, used to check the TF graph's answers against PyTorch."""
    from handlers.images import to_model_input

    spec = model.input
    pixels = to_model_input(rgb, int(spec["size"]), float(spec["crop_fraction"]),
                            float(spec["mean"]), float(spec["std"]), torch.device("cpu"))
    return pixels.unsqueeze(0)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _padding(conv) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The explicit ZeroPad2d of a Conv2dStaticSamePadding as Keras ((top, bottom), (left, right)).

    TF-"SAME" puts the odd pixel at the bottom/right; copying the torch module's own numbers
    rather than using padding="same" keeps the port exact whatever the package decides."""
    pad = getattr(getattr(conv, "static_padding", None), "padding", None)
    if not pad or not any(pad):
        return None
    left, right, top, bottom = pad
    return (top, bottom), (left, right)


class _Porter:
    """Builds Keras layers mirroring torch modules and copies their weights (NCHW -> NHWC)."""

    def __init__(self):
        import keras

        self.layers = keras.layers
        self.assign: list[tuple[object, list[np.ndarray]]] = []

    def conv(self, x, conv, name: str):
        pad = _padding(conv)
        if pad:
            x = self.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        kh, kw = conv.kernel_size
        stride = tuple(conv.stride)
        depthwise = conv.groups > 1
        if depthwise:
            if conv.groups != conv.in_channels or conv.out_channels != conv.in_channels:
                raise NotImplementedError(f"{name}: grouped conv that is not depthwise")
            layer = self.layers.DepthwiseConv2D(
                (kh, kw), stride, "valid", use_bias=False, name=name
            )
            # torch [C, 1, kh, kw] -> keras [kh, kw, C, 1]
            kernel = _np(conv.weight).transpose(2, 3, 0, 1)
        else:
            layer = self.layers.Conv2D(
                conv.out_channels, (kh, kw), stride, "valid",
                use_bias=conv.bias is not None, name=name,
            )
            # torch [out, in, kh, kw] -> keras [kh, kw, in, out]
            kernel = _np(conv.weight).transpose(2, 3, 1, 0)
        y = layer(x)
        weights = [kernel] + ([_np(conv.bias)] if conv.bias is not None and not depthwise else [])
        self.assign.append((layer, weights))
        return y

    def bn(self, x, bn, name: str):
        layer = self.layers.BatchNormalization(epsilon=bn.eps, name=name)
        y = layer(x)
        self.assign.append(
            (layer, [_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)])
        )
        return y

    def relu6(self, x, name: str):
        return self.layers.ReLU(max_value=6.0, name=name)(x)

    def dense(self, x, fc, name: str):
        layer = self.layers.Dense(fc.out_features, name=name)
        y = layer(x)
        self.assign.append((layer, [_np(fc.weight).T, _np(fc.bias)]))
        return y

    def finish(self) -> None:
        for layer, weights in self.assign:
            layer.set_weights(weights)


def _check_lite(net) -> None:
    """The port covers the EfficientNet-Lite family only (ReLU6, no squeeze-excitation)."""
    if not isinstance(net._swish, torch.nn.ReLU6) or any(b.has_se for b in net._blocks):
        raise NotImplementedError("only EfficientNet-Lite networks (ReLU6, no SE) can be ported")


def keras_network(net, size: int):
    """A Keras functional model computing the same logits as the torch EfficientNet-Lite `net`
    on NHWC float32 input of shape [N, size, size, 3]."""
    import keras

    _check_lite(net)
    port = _Porter()
    inputs = keras.Input((size, size, 3), name="pixels")
    x = port.conv(inputs, net._conv_stem, "stem_conv")
    x = port.relu6(port.bn(x, net._bn0, "stem_bn"), "stem_relu")
    for i, block in enumerate(net._blocks):
        args = block._block_args
        name = f"block{i}"
        shortcut = x
        if args.expand_ratio != 1:
            x = port.conv(x, block._expand_conv, f"{name}_expand")
            x = port.relu6(port.bn(x, block._bn0, f"{name}_expand_bn"), f"{name}_expand_relu")
        x = port.conv(x, block._depthwise_conv, f"{name}_dw")
        x = port.relu6(port.bn(x, block._bn1, f"{name}_dw_bn"), f"{name}_dw_relu")
        x = port.conv(x, block._project_conv, f"{name}_project")
        x = port.bn(x, block._bn2, f"{name}_project_bn")
        # Same condition as MBConvBlock.forward, evaluated on the same values: the package stores
        # a stage's first stride as a list ([1] != 1), so those blocks never add the shortcut.
        if args.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
            x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    x = port.conv(x, net._conv_head, "head_conv")
    x = port.relu6(port.bn(x, net._bn1, "head_bn"), "head_relu")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = port.dense(x, net._fc, "logits")
    kmodel = keras.Model(inputs, logits, name=net.__class__.__name__)
    port.finish()
    return kmodel


# --------------------------------------------------------------------------- serving graph

# Bytes of the header read for the image size (enough for every format's size fields).
HEADER_BYTES = 32
FORMAT_NAMES = ("JPEG", "PNG", "GIF", "BMP", "WebP", "unknown")
UNKNOWN = len(MAGIC)


def max_image_pixels(model: Model) -> int:
    """The catalog's pixel limit (the TorchServe handler enforces the same one)."""
    return int(model.limits.max_image_pixels)


def _formats(images):
    """Index into FORMAT_NAMES of every instance, from its magic bytes (vectorized, never fails)."""
    import tensorflow as tf

    length = tf.strings.length(images)

    def at(offset: int, magic: bytes):
        # substr needs pos <= length; shorter inputs simply do not match.
        pos = tf.minimum(offset, length)
        return tf.equal(tf.strings.substr(images, pos, tf.fill(tf.shape(pos), len(magic))), magic)

    found = tf.stack([tf.reduce_all(tf.stack([at(o, m) for o, m in fmt]), axis=0)
                      for fmt in MAGIC] + [tf.ones_like(length, tf.bool)], axis=1)
    return tf.cast(tf.argmax(tf.cast(found, tf.int32), axis=1), tf.int32)


def _header(data):
    """The first HEADER_BYTES bytes as int64 values, zero-padded for short inputs."""
    import tensorflow as tf

    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, HEADER_BYTES),
                                              b"\0" * HEADER_BYTES]), 0, HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


def _le(b, at: int, n: int):
    return sum(b[at + k] * (1 << (8 * k)) for k in range(n))


def _be(b, at: int, n: int):
    return sum(b[at + k] * (1 << (8 * (n - 1 - k))) for k in range(n))


def _signed32(v):
    import tensorflow as tf

    return tf.where(v >= 2**31, v - 2**32, v)


def _gif_first_frame(data):
    """(the GIF cut after its first frame + trailer, frame height, frame width).

    TF's GIF decoder reads every frame into memory even when only the first is returned, so a
    GIF of thousands of frames costs thousands of frames; the cut one costs one. The walk follows
    the block structure (extensions and the image's data sub-blocks), one block per step."""
    import tensorflow as tf

    raw = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
    n = tf.size(raw)
    raw = tf.concat([raw, tf.zeros([16], tf.int32)], 0)

    def byte(pos):
        return raw[tf.clip_by_value(pos, 0, n + 15)]

    flags = byte(10)
    start = 13 + tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)
    # mode: 0 at a block, 1 in an extension's sub-blocks, 2 in the image data, 3 done
    found = (start, tf.constant(0), tf.constant(0), tf.constant(0), tf.constant(-1))

    def step(pos, mode, height, width, end):
        b = byte(pos)
        image = tf.logical_and(tf.equal(mode, 0), tf.equal(b, 0x2C))
        extension = tf.logical_and(tf.equal(mode, 0), tf.equal(b, 0x21))
        other = tf.logical_and(tf.equal(mode, 0), tf.logical_not(image | extension))
        in_blocks = mode >= 1
        local = byte(pos + 9)
        local_table = tf.where(local >= 128, 3 * tf.bitwise.left_shift(2, local % 8), 0)
        terminator = tf.logical_and(in_blocks, tf.equal(b, 0))
        new_pos = tf.where(image, pos + 10 + local_table + 1,
                           tf.where(extension, pos + 2,
                                    tf.where(in_blocks, pos + b + 1, pos)))
        new_mode = tf.where(image, 2, tf.where(extension, 1, tf.where(
            other, 3, tf.where(terminator, tf.where(mode == 2, 3, 0), mode))))
        new_end = tf.where(tf.logical_and(terminator, tf.equal(mode, 2)), pos + 1, end)
        new_height = tf.where(image, byte(pos + 7) + 256 * byte(pos + 8), height)
        new_width = tf.where(image, byte(pos + 5) + 256 * byte(pos + 6), width)
        return new_pos, new_mode, new_height, new_width, new_end

    _, _, height, width, end = tf.while_loop(
        lambda pos, mode, *_: tf.logical_and(mode < 3, pos < n), step, found)
    cut = tf.where(end > 0,
                   tf.strings.join([tf.strings.substr(data, 0, tf.maximum(end, 0)), b";"]), data)
    return cut, tf.cast(height, tf.int64), tf.cast(width, tf.int64)


def _size(data, fmt):
    """(bytes to decode, height, width) from the header alone, before any pixel is decoded.
    Raises (dropping the instance) only on a JPEG whose header libjpeg cannot read."""
    import tensorflow as tf

    b = _header(data)
    zero = tf.constant(0, tf.int64)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return data, shape[0], shape[1]

    def png():
        return data, _be(b, 20, 4), _be(b, 16, 4)

    def gif():
        cut, frame_h, frame_w = _gif_first_frame(data)
        screen_h, screen_w = _le(b, 8, 2), _le(b, 6, 2)
        # The larger of the canvas and the first frame is what gets allocated.
        bigger = frame_h * frame_w > screen_h * screen_w
        return cut, tf.where(bigger, frame_h, screen_h), tf.where(bigger, frame_w, screen_w)

    def bmp():
        core = tf.equal(_le(b, 14, 4), 12)  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width = tf.where(core, _le(b, 18, 2), tf.abs(_signed32(_le(b, 18, 4))))
        height = tf.where(core, _le(b, 20, 2), tf.abs(_signed32(_le(b, 22, 4))))
        return data, height, width

    def webp():
        chunk = tf.strings.substr(data, 12, 4)
        lossless = _le(b, 21, 4)
        width = tf.where(tf.equal(chunk, "VP8X"), 1 + _le(b, 24, 3), tf.where(
            tf.equal(chunk, "VP8L"), 1 + lossless % 16384, _le(b, 26, 2) % 16384))
        height = tf.where(tf.equal(chunk, "VP8X"), 1 + _le(b, 27, 3), tf.where(
            tf.equal(chunk, "VP8L"), 1 + (lossless // 16384) % 16384, _le(b, 28, 2) % 16384))
        return data, height, width

    def unknown():
        return data, zero, zero

    return tf.switch_case(fmt, [jpeg, png, gif, bmp, webp, unknown])


def _decode_jpeg_draft(data, min_side: int):
    """A JPEG decoded at the reduced DCT scale the handler's PIL draft mode picks: the largest
    of 1/8, 1/4, 1/2, 1 that keeps both sides >= min_side. libjpeg does the scaling in both
    cases, so large photos give the same pixels (and are much cheaper to decode)."""
    import tensorflow as tf

    shape = tf.io.extract_jpeg_shape(data)
    scale = tf.minimum(shape[0] // min_side, shape[1] // min_side)
    branch = tf.where(scale >= 8, 3, tf.where(scale >= 4, 2, tf.where(scale >= 2, 1, 0)))
    return tf.switch_case(
        branch,
        [
            # ratio is an op attribute, hence one branch per scale.
            lambda r=ratio: tf.io.decode_jpeg(
                data, channels=0, ratio=r, dct_method="INTEGER_ACCURATE"
            )
            for ratio in (1, 2, 4, 8)
        ],
    )


def _preprocess(data, fmt, size: int, crop_fraction: float, mean: float, std: float):
    """Encoded image bytes (already size-checked) -> float32 [size, size, 3], the catalog input
    contract."""
    import math

    import tensorflow as tf

    # The smallest image side whose central crop still covers size pixels (handler: draft_side).
    min_side = math.ceil(size / crop_fraction)
    # channels=0 keeps the stored channels so alpha can be composited like the handler does.
    # JPEG: the accurate integer IDCT is what libjpeg in PIL uses; TF's default (fast) IDCT
    # differs by up to 10 levels per pixel, enough to reorder close top-5 classes.
    # expand_animations=False: a GIF yields its first frame, like PIL.
    image = tf.cond(
        tf.equal(fmt, 0),
        lambda: _decode_jpeg_draft(data, min_side),
        lambda: tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8),
    )
    image.set_shape([None, None, None])
    shape = tf.shape(image)
    h, w, channels = shape[0], shape[1], shape[2]
    # Same integer arithmetic as the handler: side = round(min * fraction) (half to even, like
    # Python's round), top/left floor-divided.
    side = tf.cast(tf.round(tf.cast(tf.minimum(h, w), tf.float64) * crop_fraction), tf.int32)
    side = tf.maximum(side, 1)
    top, left = (h - side) // 2, (w - side) // 2
    # Per-pixel colour fixes commute with cropping, so they run on the crop only.
    crop = image[top : top + side, left : left + side, :]
    has_alpha = tf.equal(channels % 2, 0)  # 2 = gray+alpha, 4 = RGBA
    gray = tf.equal(channels - tf.cast(has_alpha, tf.int32), 1)
    rgb = tf.cast(tf.gather(crop, tf.where(gray, [0, 0, 0], [0, 1, 2]), axis=2), tf.float32)
    alpha = tf.where(has_alpha, tf.cast(crop[:, :, -1:], tf.float32) / 255.0, 1.0)
    # Transparent pixels are composited on white (their stored colour is arbitrary); with no
    # alpha this is exactly rgb. Rounded because the handler composites in uint8.
    rgb = tf.round(rgb * alpha + 255.0 * (1.0 - alpha))
    rgb.set_shape([None, None, 3])
    resized = tf.image.resize(
        rgb, [size, size], method="bilinear", antialias=True
    )
    return (resized - mean) / std


def _instance(data, index, fmt, size: int, fraction: float, mean: float, std: float,
              limit: int):
    """(index, error message or "", pixels) of one instance. The checks never raise; only a
    decoder failing on corrupt bytes does, and that drops this instance alone (ignore_errors)."""
    import tensorflow as tf

    def not_an_image():
        return tf.strings.format(
            "images[{}] is not a " + FORMATS + " image ({} bytes); send the encoded file bytes "
            "(in REST JSON: base64 under the key b64)", (index, tf.strings.length(data)))

    def checked():
        cut, height, width = _size(data, fmt)
        too_big = tf.strings.format(
            "images[{}] is {}x{} = {} pixels; the limit is " + str(limit),
            (index, width, height, width * height))
        empty = tf.strings.format("images[{}] is a corrupt {} image (its header says {}x{})",
                                  (index, tf.gather(FORMAT_NAMES, fmt), width, height))
        message = tf.where(width * height > limit, too_big,
                           tf.where(tf.minimum(width, height) < 1, empty, ""))
        return cut, message

    cut, message = tf.cond(tf.equal(fmt, UNKNOWN), lambda: (data, not_an_image()), checked)
    pixels = tf.cond(
        tf.equal(message, ""),
        lambda: _preprocess(cut, fmt, size, fraction, mean, std),
        lambda: tf.zeros([size, size, 3], tf.float32),
    )
    return index, message, pixels


class Servable:
    """The two signature functions over one Keras network (shared weights)."""

    def __init__(self, model: Model, network, labels: list[str]):
        import tensorflow as tf

        self.model = model
        self.network = network
        self.labels = list(labels)
        self.size = int(model.input["size"])
        self.k = int(model.topk)
        self.limit = max_image_pixels(model)
        spec_images = tf.TensorSpec([None], tf.string, name="images")
        spec_pixels = tf.TensorSpec([None, self.size, self.size, 3], tf.float32, name="pixels")
        self.serve_images = tf.function(self._images, input_signature=[spec_images])
        self.serve_pixels = tf.function(self._pixels, input_signature=[spec_pixels])

    def _outputs(self, pixels, errors):
        """Top-k of the instances whose error is empty; the others get zeros and "" labels."""
        import tensorflow as tf

        good = tf.where(tf.equal(errors, ""))[:, 0]
        batch = tf.gather(pixels, good)
        classes = len(self.labels)
        # The Keras graph fails on an empty batch (a BatchNorm shape error), so a batch with no
        # good instance skips the network.
        logits = tf.cond(
            tf.shape(batch)[0] > 0,
            lambda: self.network(batch, training=False),
            lambda: tf.zeros([0, classes], tf.float32),
        )
        top = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.k, sorted=True)
        # A graph constant: the labels travel inside the SavedModel, no asset file to mount.
        table = tf.constant(self.labels, dtype=tf.string)
        rows = good[:, None]
        n = tf.shape(errors, out_type=tf.int64)[0]

        def place(values, fill):
            base = tf.fill(tf.stack([n, tf.constant(self.k, tf.int64)]), fill)
            return tf.tensor_scatter_nd_update(base, rows, values)

        return {
            "class_ids": tf.identity(place(top.indices, 0), name="class_ids"),
            "labels": tf.identity(place(tf.gather(table, top.indices), ""), name="labels"),
            "probabilities": tf.identity(place(top.values, 0.0), name="probabilities"),
            "error": tf.identity(errors, name="error"),
        }

    def _pixels(self, pixels):
        import tensorflow as tf

        finite = tf.reduce_all(tf.math.is_finite(pixels), axis=[1, 2, 3])
        indices = tf.strings.as_string(tf.range(tf.shape(pixels)[0]))
        errors = tf.where(finite, "", tf.strings.join(
            ["pixels[", indices, "] holds NaN or infinite values"]))
        return self._outputs(pixels, errors)

    def _images(self, images):
        import tensorflow as tf

        spec = self.model.input
        size, fraction = self.size, float(spec["crop_fraction"])
        mean, std = float(spec["mean"]), float(spec["std"])
        count = tf.size(images, out_type=tf.int32)
        indices = tf.range(count)
        formats = _formats(images)
        # What an instance dropped by ignore_errors (its decoder raised) is answered with.
        corrupt = tf.strings.join(["images[", tf.strings.as_string(indices),
                                   "] could not be decoded: corrupt or truncated ",
                                   tf.gather(FORMAT_NAMES, formats), " data"])
        # One instance at a time through tf.data: ignore_errors() drops an instance whose
        # decoder raises instead of failing the batch, which TF Serving may have merged from
        # several clients' requests.
        dataset = tf.data.Dataset.from_tensor_slices((images, indices, formats)).map(
            lambda data, index, fmt: _instance(data, index, fmt, size, fraction, mean, std,
                                               self.limit)
        ).ignore_errors().batch(tf.cast(tf.maximum(count, 1), tf.int64))

        def place(state, done):
            errors, pixels = state
            index, message, values = done
            rows = index[:, None]
            return (tf.tensor_scatter_nd_update(errors, rows, message),
                    tf.tensor_scatter_nd_update(pixels, rows, values))

        errors, pixels = dataset.reduce(
            (corrupt, tf.zeros(tf.stack([count, size, size, 3]), tf.float32)), place)
        return self._outputs(pixels, errors)


def warmup_requests(model: Model) -> list[bytes]:
    """Serialized PredictionLog records, one per signature, replayed by TF Serving at load time."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    size = int(model.input["size"])
    # A deterministic gradient photo stand-in: exercises decode, crop and resize in full.
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:240, None], 128.0), axis=-1)
    jpeg = tf.io.encode_jpeg(image.astype(np.uint8)).numpy()
    pixels = np.zeros((1, size, size, 3), np.float32)
    records = []
    for signature, key, value in (
        (SIGNATURE_IMAGES, "images", np.array([jpeg], dtype=object)),
        (SIGNATURE_PIXELS, "pixels", pixels),
    ):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model.name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def write_savedmodel(model: Model, target: Path) -> None:
    """Port the weights and write the SavedModel + warmup records into `target` (must not exist)."""
    import tensorflow as tf

    size = int(model.input["size"])
    network = keras_network(torch_network(model), size)
    servable = Servable(model, network, catalog.labels(model))
    module = tf.Module()
    # Only the variables are tracked (not the Keras model object): the signatures are all TF
    # Serving calls, and leaving out Keras' own saved functions halves saved_model.pb.
    module.network_variables = [weight.value for weight in network.weights]
    signatures = {
        SIGNATURE_IMAGES: servable.serve_images.get_concrete_function(),
        SIGNATURE_PIXELS: servable.serve_pixels.get_concrete_function(),
    }
    tf.saved_model.save(module, str(target), signatures=signatures)
    warmup = target / WARMUP_FILE
    warmup.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for record in warmup_requests(model):
            writer.write(record)


def export(model: Model) -> None:
    """Write model.savedmodel_dir atomically (see the module docstring)."""
    target = model.savedmodel_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and non-numeric: TF Serving's file-system poller ignores it while it is written.
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    retired = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        out = stage / "savedmodel"
        write_savedmodel(model, out)
        if target.exists():
            # A directory cannot be replaced by rename(2) while non-empty: move the old one
            # aside first; the gap between the two renames is two syscalls long.
            target.rename(retired)
        out.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="export only this model (repeatable)")
    args = parser.parse_args(argv)
    models = [m for m in catalog.load().values() if "tfserving" in m.servers]
    if args.model:
        models = [m for m in models if m.name in args.model]
    for model in models:
        export(model)
        print(f"[export_tf] {model.name}: {model.savedmodel_dir.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
