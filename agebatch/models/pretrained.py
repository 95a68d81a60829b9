"""Model B: an ImageNet backbone with agebatch's two heads.

EfficientNet-Lite0 (default) is built here layer by layer, with the layer names of the
offline weights described in ``shared/weights/PROVENANCE.txt`` (EfficientNet-B0 block
table, no squeeze-excite, ReLU6, BN epsilon 1e-3, 'same' padding, no conv biases).
The others come from ``keras.applications``: MobileNetV2 alpha 0.35 (offline weights in
``shared/weights``), and ResNet50, Xception and VGG16, the backbones of the coursework
reports this project grew from; their ImageNet files are not downloadable on these
machines, so they take ``--weights PATH`` (a Keras no-top weights file) or ``none``.
Each backbone's input preprocessing is recorded once, in `BACKBONES`, and becomes the
model's first layers, so every export carries it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from agebatch.errors import AgebatchError
from agebatch.models.heads import AgeHead, heads, preprocess


@dataclass(frozen=True, slots=True)
class BackboneSpec:
    scale: float  # x * scale + offset on RGB 0..255 (after the swap to BGR where `bgr`)
    offset: float | tuple[float, float, float]
    preprocessing: str
    weights_file: str  # file name of the offline ImageNet no-top weights
    architecture: str
    application: str | None = None  # keras.applications class; None: built here (Lite0)
    kwargs: tuple[tuple[str, Any], ...] = ()
    bgr: bool = False  # "caffe" preprocessing: BGR channel order, ImageNet mean subtracted, no scaling
    min_size: int = 32  # smallest input side the architecture accepts


#: ImageNet BGR means of Keras' "caffe" preprocessing (ResNet50, VGG16), subtracted in the graph.
CAFFE_OFFSET = (-103.939, -116.779, -123.68)


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        1 / 128.0,
        -127.0 / 128.0,
        "RGB uint8 -> (x - 127) / 128 (in graph)",
        "efficientnet_lite0_imagenet_notop.h5",
        "efficientnet-lite0",
    ),
    "mobilenetv2-0.35": BackboneSpec(
        1 / 127.5,
        -1.0,
        "RGB uint8 -> x / 127.5 - 1 (in graph)",
        "mobilenet_v2_0.35_224_no_top_imagenet_tfjs.h5",
        "mobilenetv2-0.35",
        application="MobileNetV2",
        kwargs=(("alpha", 0.35),),
    ),
    "resnet50": BackboneSpec(
        1.0,
        CAFFE_OFFSET,
        "RGB uint8 -> BGR, minus the ImageNet mean (in graph)",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet50",
        application="ResNet50",
        bgr=True,
    ),
    "xception": BackboneSpec(
        1 / 127.5,
        -1.0,
        "RGB uint8 -> x / 127.5 - 1 (in graph)",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "xception",
        application="Xception",
        min_size=71,
    ),
    "vgg16": BackboneSpec(
        1.0,
        CAFFE_OFFSET,
        "RGB uint8 -> BGR, minus the ImageNet mean (in graph)",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "vgg16",
        application="VGG16",
        bgr=True,
    ),
}

# (repeats, kernel, first stride, expand ratio, in channels, out channels), from PROVENANCE.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _relu6(name: str) -> Any:
    from keras import layers

    return layers.ReLU(6.0, name=name)


def lite0_blocks() -> list[tuple[int, int, int, int, int]]:
    """Flat block table: (kernel, stride, expand, in channels, out channels) for block0..block15."""
    table = []
    for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
        for r in range(repeats):
            table.append((kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
    return table


def lite0_channels_before(block: int) -> int:
    """Channels of the tensor entering `block` (what a feature cache split there stores)."""
    return lite0_blocks()[block][3]


def efficientnet_lite0(x: Any, *, first_block: int = 0, top: bool = True) -> Any:
    """Apply Lite0 (no classifier) to a preprocessed float tensor, from `first_block` on.

    ``first_block=0`` includes the stem. Starting later builds only the upper part,
    with the same layer names, which is how Model B trains on cached features.
    """
    from keras import layers

    if first_block == 0:
        x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name="stem_bn")(x)
        x = _relu6("stem_relu")(x)
    for block, (kernel, s, expand, c_in, cout) in enumerate(lite0_blocks()):
        if block < first_block:
            continue
        inputs = x
        p = f"block{block}"
        if expand != 1:
            x = layers.Conv2D(c_in * expand, 1, padding="same", use_bias=False, name=f"{p}_expand_conv")(x)
            x = layers.BatchNormalization(epsilon=1e-3, name=f"{p}_expand_bn")(x)
            x = _relu6(f"{p}_expand_relu")(x)
        x = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False, name=f"{p}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{p}_dw_bn")(x)
        x = _relu6(f"{p}_dw_relu")(x)
        x = layers.Conv2D(cout, 1, padding="same", use_bias=False, name=f"{p}_project_conv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{p}_project_bn")(x)
        if s == 1 and c_in == cout:
            x = layers.Add(name=f"{p}_add")([x, inputs])
    if top:
        x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name="top_bn")(x)
        x = _relu6("top_relu")(x)
    return x


def resolve_weights(backbone: str, weights: str | None, weights_dir: str | None) -> str | None:
    """'none' -> None; a path -> that path; 'imagenet' or None -> the offline file in `weights_dir`."""
    if weights == "none":
        return None
    if weights not in (None, "imagenet"):
        if not os.path.isfile(weights):
            raise AgebatchError(f"weights file not found: {weights}")
        return weights
    folder = weights_dir or os.environ.get("AGEBATCH_WEIGHTS", "../shared/weights")
    path = os.path.join(folder, BACKBONES[backbone].weights_file)
    if not os.path.isfile(path):
        raise AgebatchError(
            f"ImageNet weights for {backbone} not found at {path} (agebatch never downloads them); "
            "pass --weights PATH (a Keras no-top weights file), set AGEBATCH_WEIGHTS to their folder, or --weights none"
        )
    return path


def load_lite0_weights(model: Any, weights_path: str) -> int:
    """Copy the offline Lite0 weights into `model`'s layers of the same names; return arrays set.

    Reads the legacy HDF5 layout directly (root attr ``layer_names``, one group per
    layer) so that any model holding Lite0 layers (the flat Model B, or only its upper
    blocks) can be filled, and a missing or mis-shaped array is an error, not a skip.
    """
    import h5py

    try:
        f = h5py.File(weights_path, "r")
    except OSError as e:
        raise AgebatchError(f"cannot read weights file {weights_path}: {e}") from e
    n = 0
    with f:
        names = {n.decode() if isinstance(n, bytes) else n for n in f.attrs.get("layer_names", [])}
        for layer in model.layers:
            if layer.name not in names or not layer.weights:
                continue
            g: Any = f[layer.name]  # h5py's types cannot say a group holds datasets
            arrays = [g[w.decode() if isinstance(w, bytes) else w][()] for w in g.attrs["weight_names"]]
            current = layer.get_weights()
            if [a.shape for a in arrays] != [c.shape for c in current]:
                have, need = [a.shape for a in arrays], [c.shape for c in current]
                raise AgebatchError(f"{weights_path}: layer {layer.name} has shapes {have}, the model needs {need}")
            layer.set_weights(arrays)
            n += len(arrays)
    if n == 0:
        raise AgebatchError(f"{weights_path} holds no EfficientNet-Lite0 layer weights")
    return n


def build_pretrained(
    *,
    backbone: str = "efficientnet-lite0",
    weights: str | None = "imagenet",
    weights_dir: str | None = None,
    input_size: tuple[int, int] = (128, 128),
    age_head: AgeHead = "bins",
    hidden: int = 256,
    dropout: float = 0.3,
    first_block: int = 0,
    name: str = "modelB",
) -> Any:
    """Build Model B: uint8 (N, H, W, 3) -> {"age", "gender_prob"}, backbone with ImageNet weights.

    With ``first_block > 0`` (Lite0 only) the model starts at that block instead and
    takes float features of the cached lower part as input (`agebatch.train`).
    """
    import keras
    from keras import layers

    spec = BACKBONES.get(backbone)
    if spec is None:
        raise AgebatchError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if min(input_size) < spec.min_size:
        raise AgebatchError(f"{backbone} needs an input of at least {spec.min_size} pixels (got {input_size})")
    weights_path = resolve_weights(backbone, weights, weights_dir)
    if spec.application is not None:
        if first_block:
            raise AgebatchError("feature caching (first_block) is implemented for efficientnet-lite0 only")
        build = getattr(keras.applications, spec.application)
        try:
            base = build(input_shape=(*input_size, 3), include_top=False, weights=weights_path, **dict(spec.kwargs))
        except ValueError as e:  # keras.applications reports a mismatched weights file this way
            raise AgebatchError(f"cannot build {backbone} with weights {weights_path}: {str(e).splitlines()[0]}") from e
        inputs = keras.Input((*input_size, 3), dtype="uint8", name="image")
        x = base(_preprocess(inputs, spec))
    elif first_block == 0:
        inputs = keras.Input((*input_size, 3), dtype="uint8", name="image")
        x = efficientnet_lite0(_preprocess(inputs, spec))
    else:
        # Spatial size of the features entering `first_block`: halved once per stride-2 step before it.
        steps = 1 + sum(1 for b, blk in enumerate(lite0_blocks()) if b < first_block and blk[1] == 2)
        h, w = (-(-input_size[0] // 2**steps), -(-input_size[1] // 2**steps))
        inputs = keras.Input((h, w, lite0_channels_before(first_block)), name="features")
        x = efficientnet_lite0(inputs, first_block=first_block)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, heads(x, age_head=age_head, hidden=hidden, dropout=dropout), name=name)
    if backbone == "efficientnet-lite0" and weights_path is not None:
        load_lite0_weights(model, weights_path)
    return model


def _preprocess(inputs: Any, spec: BackboneSpec) -> Any:
    """The backbone's input preprocessing as the model's first layers (uint8 RGB in)."""
    from agebatch.models.layers import ReverseChannels

    x = ReverseChannels(name="to_bgr")(inputs) if spec.bgr else inputs
    offset = list(spec.offset) if isinstance(spec.offset, tuple) else spec.offset
    return preprocess(x, spec.scale, offset)  # pyright: ignore[reportArgumentType]  # Rescaling broadcasts a per-channel offset


def freeze_lite0_below(model: Any, first_block: int) -> None:
    """Freeze Lite0's stem and blocks below `first_block` (frozen BatchNorm runs in inference mode)."""
    for layer in model.layers:
        m = re.match(r"block(\d+)", layer.name)
        if layer.name.startswith("stem") or (m is not None and int(m.group(1)) < first_block):
            layer.trainable = False


def split_lite0(
    model: Any, *, first_block: int, input_size: tuple[int, int], age_head: AgeHead, name: str, dropout: float | None = None
) -> tuple[Any, Any]:
    """Cut Lite0 Model B before `first_block`: (frozen lower part, uint8 -> features; upper part with `model`'s weights).

    The feature-cache training path computes the lower part once per face and trains the upper part on its output.
    """
    import keras

    head_options: dict[str, Any] = {} if dropout is None else {"dropout": dropout}
    k = first_block - 1
    names = {layer.name for layer in model.layers}
    split = f"block{k}_add" if f"block{k}_add" in names else f"block{k}_project_bn"
    bottom = keras.Model(model.inputs, model.get_layer(split).output, name="frozen_bottom")
    top = build_pretrained(
        backbone="efficientnet-lite0",
        weights="none",
        input_size=input_size,
        age_head=age_head,
        first_block=first_block,
        name=name + "_top",
        **head_options,
    )
    copy_weights(model, top)  # ImageNet weights (and fresh heads) into the upper part
    return bottom, top


def copy_weights(src: Any, dst: Any) -> int:
    """Copy weights between models by layer name, for every layer both have; return how many layers."""
    src_layers = {layer.name: layer for layer in src.layers}
    n = 0
    for layer in dst.layers:
        if layer.weights and layer.name in src_layers:
            layer.set_weights(src_layers[layer.name].get_weights())
            n += 1
    return n
