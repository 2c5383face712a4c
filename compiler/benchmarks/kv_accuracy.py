"""What an int8 KV cache costs in accuracy: the same text fed token by token through a model with a
float32 cache and with an int8 one (each activation path), next-token distributions compared.

    python -m compiler.benchmarks.kv_accuracy [--gguf PATH | --model smollm2-135m] [--target host]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based inks and a wooden press adapted from those used for wine. Books, which had "
        "been copied by hand in monasteries, became cheaper and far more common; within fifty years presses were "
        "working in more than two hundred European cities. The spread of printed pamphlets shaped the Reformation, "
        "standardised spelling and grammar, and made scientific results easier to share and check. Historians still "
        "debate how quickly literacy rose, but the number of books printed before 1500 is estimated at over twenty "
        "million copies. Later improvements, such as the steam-powered rotary press of the nineteenth century, made "
        "daily newspapers possible and changed politics once again. Today the word press still names journalism "
        "itself. Rivers shape the land they cross. A river carries sand and stones from the mountains, cuts valleys "
        "through soft rock, and drops what it carries where it slows down, building deltas at the sea. Over thousands "
        "of years a river can move its bed across a whole plain, leaving lakes where its old loops were cut off. People "
        "settled along rivers because they offered water, fish, fertile soil and a road for boats; many of the oldest "
        "cities stand on their banks. Dams now hold back many of the largest rivers to store water and make "
        "electricity, which changes how much sediment reaches the coast and how fish can travel upstream to spawn.")


def distributions(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def teacher_forced(decoder, ids: list[int]) -> np.ndarray:
    """Logits after each token of `ids` (fed one at a time after the first)."""
    decoder.reset()
    return np.stack([decoder.forward(ids[:1])] + [decoder.forward([t]) for t in ids[1:]])


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    p, q = distributions(reference), distributions(other)
    kl = (p * (np.log(p + 1e-300) - np.log(q + 1e-300))).sum(-1)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
            "max_logit_difference": float(np.abs(reference - other).max())}


def main(argv: list[str] | None = None) -> int:
    import targets
    from compiler import backends
    from compiler.llm import model_files
    from compiler.llm.decoder import Decoder
    from compiler.llm.run import greedy_tokens, model_library, open_model
    from compiler import runtime

    parser = argparse.ArgumentParser(prog="python -m compiler.benchmarks.kv_accuracy", description=__doc__)
    parser.add_argument("--gguf")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--target", default="host")
    args = parser.parse_args(argv)
    target = targets.get(args.target)
    gguf = Path(args.gguf) if args.gguf else model_files.gguf_path(args.model)
    model, tokenizer = open_model(gguf, 1024)
    ids = tokenizer.encode(TEXT)
    prompt = tokenizer.encode("Once upon a time, in a small village,")
    kept = {}
    for activations in ("f32", "q8"):
        logits, greedy = {}, {}
        for kv in ("f32", "int8"):
            out = Path("build") / "run" / target.name / f"{gguf.stem.lower()}-{activations}{'-kv8' if kv == 'int8' else ''}"
            model_library(model, target, out, toolchain=backends.toolchain_for(target), tuning_dir=None,
                          activations=activations, kv_cache=kv, progress=lambda _: None)
            with runtime.load(out) as library:
                decoder = Decoder(model, library, max_context=1024, activations=activations, kv_cache=kv)
                logits[kv] = teacher_forced(decoder, ids)
                greedy[kv] = greedy_tokens(decoder, prompt, 128)[0]
        kept[activations] = logits["f32"]
        row = compare(logits["f32"], logits["int8"])
        first = next((i for i, (a, b) in enumerate(zip(greedy["f32"], greedy["int8"])) if a != b), None)
        print(f"{activations} activations, int8 against float32 KV cache over {len(ids)} tokens: KL mean "
              f"{row['kl_mean']:.2e} (max {row['kl_max']:.2e}), top-1 agreement {100 * row['top1_agreement']:.1f}%, "
              f"max |logit difference| {row['max_logit_difference']:.3f}; greedy 128 tokens: "
              f"{'identical' if first is None else f'first difference at step {first}'}", flush=True)
    row = compare(kept["f32"], kept["q8"])
    print(f"for scale, q8 against f32 activations (float32 caches): KL mean {row['kl_mean']:.2e} "
          f"(max {row['kl_max']:.2e}), top-1 agreement {100 * row['top1_agreement']:.1f}%, "
          f"max |logit difference| {row['max_logit_difference']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
