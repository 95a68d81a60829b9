"""`agebatch build-engine`."""

from __future__ import annotations

import click

from agebatch.cli.options import CONTEXT_SETTINGS


@click.command("build-engine", context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", type=click.Choice(["tensorrt", "onnx"]), default="tensorrt", show_default=True)
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--min-batch", default=1, show_default=True, type=click.IntRange(1))
@click.option("--opt-batch", default=256, show_default=True, type=click.IntRange(1))
@click.option("--max-batch", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--calib", default=None, help="Folder of faces for the parity report (up to 512; default: bundled samples).")
@click.option("--out", default="engines", show_default=True, help="Folder for the ONNX exports, engine and sidecars.")
def build_engine(
    model: str, target: str, precision: str, min_batch: int, opt_batch: int, max_batch: int, calib: str | None, out: str
) -> None:
    """Export MODEL (.keras) to ONNX, check it against Keras, and build a TensorRT engine.

    Always writes the FP32 ONNX export (dynamic batch, uint8 NHWC input named
    `image`, outputs `age` and `gender_prob`); with --precision fp16 also an FP16
    ONNX (FP32 I/O, age head kept FP32), which TensorRT builds strongly typed.
    Each artifact gets a JSON sidecar with the model card, batch profile and a
    parity report against Keras on real faces. Without TensorRT or a GPU,
    --target tensorrt exits 2; --target onnx gives a portable engine.
    """
    from rich.console import Console

    from agebatch.cli.report import parity_table
    from agebatch.commands.engine import build_engine as run_build

    result = run_build(
        model, target=target, precision=precision, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
        calib=calib, out_dir=out,
    )  # fmt: skip
    Console().print(parity_table(result.parity, title=f"parity against Keras ({calib or 'bundled samples'}), written to {out}/"))
