"""Encoding on CPU with ONNX Runtime: export a Sentence-Transformers folder, then encode without torch's runtime.

Why: on a CPU, ONNX Runtime runs the same graph faster than eager PyTorch, and an int8 model faster still.
The int8 model keeps one scale per block of 128 inputs, for the weights and for each text's activations alike
(ONNX Runtime's ``MatMulNBits`` at 8 bits, multiplied in int8): the usual dynamic scheme rounds a whole batch's
activations to one scale, which the few large values of a transformer's activations make too coarse (on
all-MiniLM-L6-v2 it moved nDCG@10 by up to 0.008, blocks by 0.0024; ``benchmarks/int8_sensitivity.py``
measures both). The modules after pooling (an adaptor's Dense) run once per text, so they stay float.

``mrl export MODEL --onnx [--quantize int8]`` writes ``onnx/model.onnx`` (and ``onnx/model_qint8.onnx``)
into the folder, the layout sentence-transformers' own ONNX backend reads. mrl exports and runs it itself:
sentence-transformers' backend goes through ``optimum-onnx``, whose releases pin transformers 4 while mrl
runs on transformers 5.
The exported graph is the whole module stack (transformer, pooling, any Dense such as the rotation
``mrl train --rotate`` appends, Normalize), so its outputs equal the torch model's.

Example::

    from mrl.model import load_model
    from mrl.model.onnx import OnnxEncoder, export_onnx

    model = load_model("models/my-mrl", device="cpu")
    export_onnx(model, "models/my-mrl", quantize="int8")
    encoder = OnnxEncoder("models/my-mrl", quantized=True)
    encoder.encode(["vitamin D and fractures"]).shape      # (1, 384)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from mrl.errors import MrlError

ONNX_DIR = "onnx"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_file(folder: str | Path, quantized: bool) -> Path:
    return Path(folder) / ONNX_DIR / (INT8_FILE if quantized else FLOAT_FILE)


def export_onnx(model, folder: str | Path, quantize: str | None = None) -> list[Path]:
    """Export ``model`` (the Sentence-Transformers model saved in ``folder``, loaded on the CPU) to ``folder/onnx/``;
    returns the files written.

    Each file is written to a temporary name and renamed into place, so an interrupted export leaves no
    half-written model that a later load would trust.
    """
    import torch

    if quantize not in (None, "int8"):
        raise MrlError(f"`quantize` must be int8 or None, not '{quantize}'")
    folder = Path(folder)
    model.eval()
    sample = model.tokenize(["an example sentence to trace the graph with", "and a second, longer one"])
    names = [n for n in INPUTS if n in sample]

    class Stack(torch.nn.Module):  # the module stack as a function of the tokenizer's tensors
        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, *tensors):
            return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    out_dir = folder / ONNX_DIR
    out_dir.mkdir(exist_ok=True)
    target = out_dir / FLOAT_FILE
    tmp = target.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Stack(model),
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)
    written = [target]
    if quantize == "int8":
        qtarget = out_dir / INT8_FILE
        quantize_int8(target, qtarget)
        written.append(qtarget)
    return written


# int8 weights and activations get one scale per this many inputs of a product (int8_sensitivity.py measures others)
BLOCK_SIZE = 128


def quantize_int8(
    source: Path, target: Path, block_size: int | None = BLOCK_SIZE, keep_float: tuple[str, ...] = ()
) -> None:
    """int8 quantization of ``source``'s transformer weight products but those matching ``keep_float``, written
    to a temporary name, then renamed.

    ``block_size`` n: ``MatMulNBits`` with 8-bit symmetric weights, one scale per n weights along the inner
    dimension, at accuracy level 4, where ONNX Runtime also rounds each activation row to int8 per block of n
    and multiplies in int8 (VNNI or AMX kernels where the CPU has them). ``None``: dynamic quantization, int8
    weights per output channel and one uint8 scale for a batch's activations (sentence-transformers' preset).
    """
    tmp = target.with_suffix(".tmp.onnx")
    nodes = int8_nodes(source, keep_float)
    if block_size is None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
        )
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            str(source), bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4, nodes_to_include=nodes
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(tmp))
    os.replace(tmp, target)


def int8_nodes(path: Path, keep_float: tuple[str, ...] = ()) -> list[str]:
    """The MatMul nodes to quantize: those with a weight matrix inside the transformer module (the first of the
    stack: ``/st/st.0/``), except the ones whose name matches a pattern of ``keep_float``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and n.input[1] in weights
        and n.name.startswith("/st/st.0/")
        and not any(re.search(pattern, n.name) for pattern in keep_float)
    ]


class OnnxEncoder:
    """The part of ``SentenceTransformer`` that mrl uses (``encode``, ``tokenizer``, dims), on ONNX Runtime."""

    backend = "onnx"

    def __init__(self, folder: str | Path, quantized: bool = False, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        path = onnx_file(folder, quantized)
        if not path.is_file():
            flag = " --quantize int8" if quantized else ""
            raise MrlError(f"{path} not found: export the model first (mrl export {folder} --onnx{flag})")
        modules = json.loads((folder / "modules.json").read_text())
        base = folder / modules[0]["path"]  # the Transformer module: tokenizer and sequence length
        config = (
            json.loads((base / "sentence_bert_config.json").read_text())
            if (base / "sentence_bert_config.json").is_file()
            else {}
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(base))
        self.max_seq_length = int(config.get("max_seq_length") or self.tokenizer.model_max_length)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.file = path
        self.mrl_source = str(folder.resolve())
        self.backend = "onnx-int8" if quantized else "onnx"
        self.truncate_dim: int | None = None
        self._dim = int(self._run(["x"]).shape[1])

    def get_embedding_dimension(self) -> int:
        return self._dim

    def _run(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        feed = {n: enc[n].astype(np.int64) for n in self.input_names if n in enc}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return self.session.run(None, feed)[0]

    def encode(
        self,
        texts: list[str] | str,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        **kwargs,
    ) -> np.ndarray:
        """Embeddings of ``texts`` (one text: a 1-d array), batched longest-first as sentence-transformers does."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        batches = range(0, len(texts), batch_size)
        if show_progress_bar:
            from tqdm import tqdm

            batches = tqdm(batches, desc="Batches")
        for start in batches:
            rows = order[start : start + batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        if self.truncate_dim:
            out = out[:, : self.truncate_dim]
        if normalize_embeddings:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out
